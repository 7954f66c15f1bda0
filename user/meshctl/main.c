/* meshctl entry point (placeholder until the admin API lands). */
#include <stdio.h>

int main(int argc, char **argv)
{
	fprintf(stderr, "meshctl: not implemented yet\n");
	return 1;
}
