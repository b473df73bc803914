/*
 * Added by model_compile to the C code TL2cgen generates, and compiled into
 * the same library: predict a dense, row-major float32 batch in ONE call.
 *
 * Why: calling the library through tl2cgen.Predictor costs a DMatrix and a
 * C++ dispatch per call, which dominates small models; this entry point is
 * called straight from ctypes. It writes only the caller's buffers and its
 * own stack (or a buffer it allocates), so it is reentrant: any number of
 * threads may call it at once.
 *
 * Input: X has n_rows * n_cols floats, NaN = missing (as XGBoost reads it).
 * Output: out has n_rows * N_TARGET * MAX_N_CLASS floats.
 * Returns 0, or -1 when n_cols is not the model's feature count, -2 when out
 * of memory.
 */
#include "header.h"

#define MC_ABI_VERSION 1
#define MC_STACK_FEATURES 512

int32_t mc_abi_version(void) { return MC_ABI_VERSION; }

int32_t mc_output_width(void) { return N_TARGET * MAX_N_CLASS; }

int32_t mc_predict_dense(const float* X, int64_t n_rows, int32_t n_cols, int32_t pred_margin,
                         float* out) {
  const int32_t n_feature = get_num_feature();
  const int32_t width = N_TARGET * MAX_N_CLASS;
  union Entry stack_row[MC_STACK_FEATURES];
  union Entry* row = stack_row;
  if (n_cols != n_feature) {
    return -1;
  }
  if (n_feature > MC_STACK_FEATURES) {
    row = (union Entry*)malloc(sizeof(union Entry) * (size_t)n_feature);
    if (row == NULL) {
      return -2;
    }
  }
  for (int64_t i = 0; i < n_rows; ++i) {
    const float* x = X + i * (int64_t)n_cols;
    float* result = out + i * (int64_t)width;
    /* predict() may overwrite the entries (quantize), so refill them per row. */
    for (int32_t j = 0; j < n_feature; ++j) {
      if (isnan(x[j])) {
        row[j].missing = -1;
      } else {
        row[j].fvalue = x[j];
      }
    }
    for (int32_t k = 0; k < width; ++k) {
      result[k] = 0.0f;
    }
    predict(row, pred_margin, result);
  }
  if (row != stack_row) {
    free(row);
  }
  return 0;
}
