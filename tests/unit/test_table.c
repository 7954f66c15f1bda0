/* Unit tests for meshctl's aligned tables (common/table.c). */
#include <stdlib.h>

#include "common/table.h"
#include "test.h"

static char *render(struct table *t)
{
	static char buf[1024];
	FILE *f = fmemopen(buf, sizeof(buf), "w");

	CHECK_INT_EQ(table_print(t, f), 0);
	fclose(f);
	return buf;
}

TEST(aligns_columns_to_widest_cell)
{
	const char *h[] = { "NAME", "VIP", "BACKENDS" };
	const char *r1[] = { "api", "127.77.0.10:80", "3" };
	const char *r2[] = { "payments-v2", "127.77.0.11:8080", "12" };
	struct table *t = table_new(3, h);

	table_align_right(t, 2);
	CHECK_INT_EQ(table_add_row(t, r1), 0);
	CHECK_INT_EQ(table_add_row(t, r2), 0);
	CHECK_STR_EQ(render(t), "NAME         VIP               BACKENDS\n"
				"api          127.77.0.10:80           3\n"
				"payments-v2  127.77.0.11:8080        12\n");
	table_free(t);
}

TEST(null_cells_and_no_trailing_blanks)
{
	const char *h[] = { "A", "B" };
	const char *r[] = { "longer", NULL };
	struct table *t = table_new(2, h);

	CHECK_INT_EQ(table_add_row(t, r), 0);
	CHECK_STR_EQ(render(t), "A       B\nlonger  -\n");
	table_free(t);
}

TEST(header_only_table)
{
	const char *h[] = { "SERVICE" };
	struct table *t = table_new(1, h);

	CHECK_STR_EQ(render(t), "SERVICE\n");
	table_free(t);
	table_free(NULL);
}
