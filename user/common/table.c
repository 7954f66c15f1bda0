/* Aligned text tables behind table.h. Rows are stored as one flat array of copied strings;
 * widths are computed at print time. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/table.h"

struct table {
	size_t n_cols, n_rows, cap_rows; /* rows include the header at index 0 */
	char **cells;			 /* n_rows * n_cols */
	bool *right;
};

static int add_row(struct table *t, const char *const *cells)
{
	size_t i, base;

	if (t->n_rows == t->cap_rows) {
		size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
		char **p = realloc(t->cells, cap * t->n_cols * sizeof(*p));

		if (!p)
			return -ENOMEM;
		t->cells = p;
		t->cap_rows = cap;
	}
	base = t->n_rows * t->n_cols;
	for (i = 0; i < t->n_cols; i++) {
		t->cells[base + i] = strdup(cells[i] ? cells[i] : "-");
		if (!t->cells[base + i]) {
			while (i--)
				free(t->cells[base + i]);
			return -ENOMEM;
		}
	}
	t->n_rows++;
	return 0;
}

struct table *table_new(size_t n_cols, const char *const *headers)
{
	struct table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->n_cols = n_cols;
	t->right = calloc(n_cols, sizeof(*t->right));
	if (!t->right || add_row(t, headers)) {
		table_free(t);
		errno = ENOMEM;
		return NULL;
	}
	return t;
}

void table_free(struct table *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; i < t->n_rows * t->n_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->right);
	free(t);
}

void table_align_right(struct table *t, size_t col)
{
	if (col < t->n_cols)
		t->right[col] = true;
}

int table_add_row(struct table *t, const char *const *cells)
{
	return add_row(t, cells);
}

int table_print(const struct table *t, FILE *out)
{
	size_t *w = calloc(t->n_cols, sizeof(*w)), r, c;

	if (!w)
		return -ENOMEM;
	for (r = 0; r < t->n_rows; r++)
		for (c = 0; c < t->n_cols; c++) {
			size_t n = strlen(t->cells[r * t->n_cols + c]);

			w[c] = n > w[c] ? n : w[c];
		}
	for (r = 0; r < t->n_rows; r++) {
		for (c = 0; c < t->n_cols; c++) {
			const char *s = t->cells[r * t->n_cols + c];
			int pad = (int)(w[c] - strlen(s));
			bool last = c + 1 == t->n_cols;

			if (t->right[c])
				fprintf(out, "%*s%s", pad, "", s);
			else
				fprintf(out, "%s%*s", s, last ? 0 : pad, "");
			fputs(last ? "\n" : "  ", out);
		}
	}
	free(w);
	return ferror(out) ? -EIO : 0;
}
