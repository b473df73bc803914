/*
 * Verification driver for a library compiled for another architecture.
 *
 * model_compile cross-compiles this file with the library's own compiler and
 * runs it under user-mode emulation (qemu-aarch64): it loads the library with
 * dlopen, predicts the verification rows through mc_predict_dense (the entry
 * point the server calls, batch_predict.c) and writes the outputs, so the
 * library is checked without any Python under emulation.
 *
 *   emulated_predict LIBRARY ROWS OUT MARGIN [VERSION]
 *
 * ROWS: int64 n_rows, int32 n_cols, then n_rows * n_cols float32 (NaN = missing).
 * OUT:  int32 width, int32 version, then n_rows * width float32. Little-endian,
 *       as both targets. version: the kernel library's walk that ran (its
 *       mc_kernel_isa codes), -1 for a library without one (TL2cgen's).
 * VERSION: run that walk of a kernel library (mc_predict_dense_isa), not the
 *       one the library chose when it loaded.
 * Exit status 0, or 1 with one line on stderr saying what failed.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int32_t (*predict_fn)(const float*, int64_t, int32_t, int32_t, float*);
typedef int32_t (*predict_isa_fn)(const float*, int64_t, int32_t, int32_t, float*, int32_t);
typedef int32_t (*width_fn)(void);

static int fail(const char* what, const char* detail) {
  fprintf(stderr, "emulated_predict: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    return fail("usage: emulated_predict LIBRARY ROWS OUT MARGIN [VERSION]", NULL);
  }
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    return fail("cannot load the library", dlerror());
  }
  predict_fn predict = (predict_fn)dlsym(lib, "mc_predict_dense");
  width_fn output_width = (width_fn)dlsym(lib, "mc_output_width");
  if (predict == NULL || output_width == NULL) {
    return fail("the library has no mc_predict_dense/mc_output_width", NULL);
  }
  width_fn kernel_isa = (width_fn)dlsym(lib, "mc_kernel_isa");
  predict_isa_fn predict_isa = (predict_isa_fn)dlsym(lib, "mc_predict_dense_isa");
  int32_t isa = kernel_isa ? kernel_isa() : -1;
  if (argc == 6) {
    if (predict_isa == NULL) {
      return fail("a version was asked for, but the library has no mc_predict_dense_isa", NULL);
    }
    isa = atoi(argv[5]);
  }
  FILE* in = fopen(argv[2], "rb");
  if (in == NULL) {
    return fail("cannot open the rows file", argv[2]);
  }
  int64_t n_rows = 0;
  int32_t n_cols = 0;
  if (fread(&n_rows, sizeof n_rows, 1, in) != 1 || fread(&n_cols, sizeof n_cols, 1, in) != 1 ||
      n_rows < 0 || n_cols <= 0) {
    return fail("the rows file has no valid header", argv[2]);
  }
  const int32_t width = output_width();
  float* X = malloc(sizeof(float) * (size_t)(n_rows * n_cols) + 1);
  float* out = malloc(sizeof(float) * (size_t)(n_rows * width) + 1);
  if (X == NULL || out == NULL) {
    return fail("out of memory", NULL);
  }
  if (fread(X, sizeof(float), (size_t)(n_rows * n_cols), in) != (size_t)(n_rows * n_cols)) {
    return fail("the rows file is shorter than its header says", argv[2]);
  }
  fclose(in);
  int32_t rc = argc == 6 ? predict_isa(X, n_rows, n_cols, atoi(argv[4]), out, isa)
                         : predict(X, n_rows, n_cols, atoi(argv[4]), out);
  if (rc != 0) {
    return fail("mc_predict_dense failed", rc == -1 ? "wrong number of features"
                                           : rc == -3 ? "this CPU lacks the version asked for" : "out of memory");
  }
  FILE* dst = fopen(argv[3], "wb");
  if (dst == NULL || fwrite(&width, sizeof width, 1, dst) != 1 || fwrite(&isa, sizeof isa, 1, dst) != 1 ||
      fwrite(out, sizeof(float), (size_t)(n_rows * width), dst) != (size_t)(n_rows * width) ||
      fclose(dst) != 0) {
    return fail("cannot write the output file", argv[3]);
  }
  return 0;
}
