/*
 * pgvector's cosine loop (0.8.0, src/vector.c, VectorCosineSimilarity), compiled with its Makefile's
 * flags for another target, to check memory-sync's emulation of that target's float32 summation
 * (src/cache/hot/int8/pgvector-distance.ts) bit for bit: bench/arithmetic.ts builds and runs it.
 * Input: repeated [dim int32, rows int32, query float32[dim], rows × float32[dim]]; output: each
 * row's `row <=> query` as pgvector returns it (float64).
 */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
static double VectorCosineSimilarity(int dim, float *ax, float *bx) {
	float similarity = 0.0; float norma = 0.0; float normb = 0.0;
	for (int i = 0; i < dim; i++) { similarity += ax[i] * bx[i]; norma += ax[i] * ax[i]; normb += bx[i] * bx[i]; }
	return (double) similarity / sqrt((double) norma * (double) normb);
}
int main(int argc, char **argv) {
  FILE *f = fopen(argv[1], "rb"); FILE *o = fopen(argv[2], "wb");
  int dim, rows;
  while (fread(&dim, 4, 1, f) == 1) {
    fread(&rows, 4, 1, f);
    float *q = malloc(4 * dim), *r = malloc(4 * dim);
    fread(q, 4, dim, f);
    for (int i = 0; i < rows; i++) {
      fread(r, 4, dim, f);
      double s = VectorCosineSimilarity(dim, r, q);
      if (s > 1) s = 1.0; else if (s < -1) s = -1.0;
      double d = 1.0 - s;
      fwrite(&d, 8, 1, o);
    }
    free(q); free(r);
  }
  fclose(o); return 0;
}
