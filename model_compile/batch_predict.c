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
 * Rows go through mc_predict_block() MC_BLOCK_ROWS at a time. model_compile
 * generates that function above this text: for a model split into several
 * translation units it runs each unit's trees over the whole block before the
 * next unit (the unit's code stays in the instruction cache), performing per
 * row exactly the additions predict() performs, in the same order, so the
 * results are bit-identical to predict()'s.
 *
 * Input: X has n_rows * n_cols floats, NaN = missing (as XGBoost reads it).
 * Output: out has n_rows * N_TARGET * MAX_N_CLASS floats.
 * Returns 0, or -1 when n_cols is not the model's feature count, -2 when out
 * of memory.
 */

#define MC_ABI_VERSION 1
#define MC_BLOCK_ROWS 64
#define MC_STACK_ENTRIES 4096

int32_t mc_abi_version(void) { return MC_ABI_VERSION; }

int32_t mc_output_width(void) { return N_TARGET * MAX_N_CLASS; }

int32_t mc_predict_dense(const float* X, int64_t n_rows, int32_t n_cols, int32_t pred_margin,
                         float* out) {
  const int32_t n_feature = get_num_feature();
  const int32_t width = N_TARGET * MAX_N_CLASS;
  const int64_t block = n_rows < MC_BLOCK_ROWS ? n_rows : MC_BLOCK_ROWS;
  union Entry stack_rows[MC_STACK_ENTRIES];
  union Entry* rows = stack_rows;
  if (n_cols != n_feature) {
    return -1;
  }
  if (block * n_feature > MC_STACK_ENTRIES) {
    rows = (union Entry*)malloc(sizeof(union Entry) * (size_t)(block * n_feature));
    if (rows == NULL) {
      return -2;
    }
  }
  for (int64_t start = 0; start < n_rows; start += block) {
    const int64_t n = (n_rows - start < block) ? n_rows - start : block;
    const float* x = X + start * (int64_t)n_cols;
    float* result = out + start * (int64_t)width;
    /* predict() may overwrite the entries (quantize), so they are refilled per block. */
    for (int64_t j = 0; j < n * n_feature; ++j) {
      if (isnan(x[j])) {
        rows[j].missing = -1;
      } else {
        rows[j].fvalue = x[j];
      }
    }
    for (int64_t k = 0; k < n * width; ++k) {
      result[k] = 0.0f;
    }
    mc_predict_block(rows, (int32_t)n, n_feature, width, pred_margin, result);
  }
  if (rows != stack_rows) {
    free(rows);
  }
  return 0;
}
