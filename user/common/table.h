/* Aligned text tables for meshctl's human output: column widths from the widest cell, two
 * spaces between columns, no trailing blanks. Cells are copied. */
#ifndef MESH_TABLE_H
#define MESH_TABLE_H

#include <stddef.h>
#include <stdio.h>

struct table;

/* A table with `n_cols` columns titled `headers` (copied). NULL with errno ENOMEM. */
struct table *table_new(size_t n_cols, const char *const *headers);
void table_free(struct table *t);
/* Right-aligns column `col` (numbers). */
void table_align_right(struct table *t, size_t col);
/* Appends a row of exactly n_cols cells (NULL prints as "-"). Returns 0 or -ENOMEM. */
int table_add_row(struct table *t, const char *const *cells);
/* Prints the header and rows to `out`. Returns 0 or -EIO. */
int table_print(const struct table *t, FILE *out);

#endif
