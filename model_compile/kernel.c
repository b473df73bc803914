/*
 * model_compile's own tree kernel (generator "kernel"), compiled after the model
 * data that model_compile/codegen.py writes above this text:
 *
 *   MC_NUM_FEATURE, MC_NUM_CLASS, MC_NUM_TREE, MC_NUM_TREE_PADDED (a multiple of 16),
 *   MC_POSTPROCESSOR (one of the MC_PP_ codes), MC_SIGMOID_ALPHA, MC_RATIO_C,
 *   mc_nodes[]      every tree's nodes, breadth first, children side by side;
 *   mc_leaf[]       per node: the leaf value (0 for a split);
 *   mc_tree_off[]   first node of each tree (padding trees share one leaf);
 *   mc_tree_depth[] levels to walk per tree; mc_tree_class[]: the output it adds to;
 *   mc_group_depth16[] / mc_group_depth8[]: the deepest tree of each group of 16 / 8;
 *   mc_base[]       base margin per class.
 *
 * A node is 8 bytes: the float32 threshold and a word holding the left child
 * (relative to the tree, bits 0-15), the feature (bits 16-30) and "missing goes
 * right" (bit 31). A row goes right when x >= threshold, or when x is missing and
 * the node says so: exactly XGBoost's "x < threshold goes left". A leaf has a NaN
 * threshold, "missing goes left" and itself as left child, so that it keeps the
 * walk where it is: every tree is walked a fixed number of levels, with no
 * branch on the data (no mispredictions, several walks in flight at once).
 *
 * Per row the leaves are added in tree order to the base margin, in float32, as
 * XGBoost adds them. The versions of the walk, chosen when the library loads
 * by what the CPU reports: portable C everywhere; on x86-64 AVX2 (8 lanes) and
 * AVX-512 (16 lanes), on arm64 NEON (4 lanes; getauxval(AT_HWCAP) says
 * HWCAP_ASIMD). Each runs blocks of rows in lanes (one tree over many rows: its
 * nodes stay in L1) and, for the rows left over, trees in lanes (one row over
 * 8/16 trees).
 *
 * Entry points (the same C ABI as model_compile's TL2cgen libraries):
 * get_num_feature, get_num_target, get_num_class, mc_abi_version,
 * mc_output_width, mc_predict_dense; plus mc_kernel_isa (the version chosen)
 * and mc_predict_dense_isa (one version by name, for tests and benchmarks).
 * Everything writes only the caller's buffers and its stack: reentrant.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MC_ABI_VERSION 1
#define MC_BLOCK_ROWS 64

enum { MC_ISA_PORTABLE = 0, MC_ISA_AVX2 = 1, MC_ISA_AVX512 = 2, MC_ISA_NEON = 3 };

#define MC_LEFT(m) ((int32_t)((m) & 0xffffu))
#define MC_FEATURE(m) ((int32_t)(((m) >> 16) & 0x7fffu))
#define MC_MISSING_RIGHT(m) ((uint32_t)((m) >> 31))

int32_t get_num_feature(void) { return MC_NUM_FEATURE; }
int32_t get_num_target(void) { return 1; }
void get_num_class(int32_t* out) { out[0] = MC_NUM_CLASS; }
int32_t mc_abi_version(void) { return MC_ABI_VERSION; }
int32_t mc_output_width(void) { return MC_NUM_CLASS; }

/* ---- the objective's transform (pred_margin = 0) ----------------------- */

static void mc_transform(float* out, int64_t n) {
  const int32_t w = MC_NUM_CLASS;
  for (int64_t r = 0; r < n; ++r) {
    float* y = out + r * w;
    switch (MC_POSTPROCESSOR) {
      case MC_PP_IDENTITY:
        break;
      case MC_PP_SIGMOID:
        for (int32_t k = 0; k < w; ++k) y[k] = 1.0f / (1.0f + expf(-MC_SIGMOID_ALPHA * y[k]));
        break;
      case MC_PP_EXPONENTIAL:
        for (int32_t k = 0; k < w; ++k) y[k] = expf(y[k]);
        break;
      case MC_PP_EXPONENTIAL_STANDARD_RATIO:
        for (int32_t k = 0; k < w; ++k) y[k] = exp2f(-y[k] / MC_RATIO_C);
        break;
      case MC_PP_LOGARITHM_ONE_PLUS_EXP:
        for (int32_t k = 0; k < w; ++k) y[k] = log1pf(expf(y[k]));
        break;
      case MC_PP_HINGE:
        for (int32_t k = 0; k < w; ++k) y[k] = y[k] > 0.0f ? 1.0f : 0.0f;
        break;
      case MC_PP_SIGNED_SQUARE:
        for (int32_t k = 0; k < w; ++k) y[k] = copysignf(y[k] * y[k], y[k]);
        break;
      case MC_PP_SOFTMAX: {
        float top = y[0], sum = 0.0f;
        for (int32_t k = 1; k < w; ++k) top = y[k] > top ? y[k] : top;
        for (int32_t k = 0; k < w; ++k) {
          y[k] = expf(y[k] - top);
          sum += y[k];
        }
        for (int32_t k = 0; k < w; ++k) y[k] /= sum;
        break;
      }
      case MC_PP_MULTICLASS_OVA:
        for (int32_t k = 0; k < w; ++k) y[k] = 1.0f / (1.0f + expf(-MC_SIGMOID_ALPHA * y[k]));
        break;
    }
  }
}

/* ---- portable walk ------------------------------------------------------ */

/* One node step, the same in every version. */
static inline int32_t mc_step(const struct mc_node* nd, int32_t idx, const float* row) {
  const struct mc_node node = nd[idx];
  const float x = row[MC_FEATURE(node.meta)];
  const int32_t right = (x >= node.threshold) | ((x != x) & (int32_t)MC_MISSING_RIGHT(node.meta));
  return MC_LEFT(node.meta) + right;
}

/* Rows in lanes: every tree over the block's rows, level by level (the rows'
 * walks are independent, so the CPU keeps several in flight). */
static void mc_rows_portable(const float* X, int32_t n, float* out) {
  int32_t idx[MC_BLOCK_ROWS];
  for (int32_t t = 0; t < MC_NUM_TREE; ++t) {
    const struct mc_node* nd = mc_nodes + mc_tree_off[t];
    const float* leaf = mc_leaf + mc_tree_off[t];
    const int32_t depth = mc_tree_depth[t], cls = mc_tree_class[t];
    for (int32_t r = 0; r < n; ++r) idx[r] = 0;
    for (int32_t d = 0; d < depth; ++d) {
      for (int32_t r = 0; r < n; ++r) idx[r] = mc_step(nd, idx[r], X + (int64_t)r * MC_NUM_FEATURE);
    }
    for (int32_t r = 0; r < n; ++r) out[(int64_t)r * MC_NUM_CLASS + cls] += leaf[idx[r]];
  }
}

/* Trees in lanes for one row: four trees walked side by side. */
static void mc_trees_portable(const float* row, float* out) {
  for (int32_t t = 0; t < MC_NUM_TREE_PADDED; t += 8) {
    int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int32_t depth = mc_group_depth8[t / 8];
    for (int32_t d = 0; d < depth; ++d) {
      for (int32_t k = 0; k < 8; ++k) idx[k] = mc_step(mc_nodes + mc_tree_off[t + k], idx[k], row);
    }
    for (int32_t k = 0; k < 8 && t + k < MC_NUM_TREE; ++k) {
      out[mc_tree_class[t + k]] += mc_leaf[mc_tree_off[t + k] + idx[k]];
    }
  }
}

static void mc_block_portable(const float* X, int32_t n, float* out) {
  if (n >= 4) {
    mc_rows_portable(X, n, out);
  } else {
    for (int32_t r = 0; r < n; ++r) mc_trees_portable(X + (int64_t)r * MC_NUM_FEATURE, out + (int64_t)r * MC_NUM_CLASS);
  }
}

/* ---- x86 vector walks --------------------------------------------------- */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MC_HAVE_X86 1

#define MC_AVX2 __attribute__((target("avx2")))

/* One level for 8 lanes: node indices idx (absolute, into mc_nodes), tree bases
 * base (absolute index of each lane's tree), x gathered at xoff + feature. */
MC_AVX2 static inline __m256i mc_step8(__m256i idx, __m256i base, const float* X, __m256i xoff) {
  const int* words = (const int*)mc_nodes;
  const __m256i meta = _mm256_i32gather_epi32(words + 1, idx, 8);
  const __m256 thr = _mm256_i32gather_ps((const float*)words, idx, 8);
  const __m256i feature = _mm256_and_si256(_mm256_srli_epi32(meta, 16), _mm256_set1_epi32(0x7fff));
  const __m256 x = _mm256_i32gather_ps(X, _mm256_add_epi32(xoff, feature), 4);
  const __m256i ge = _mm256_castps_si256(_mm256_cmp_ps(x, thr, _CMP_GE_OQ));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  const __m256i right = _mm256_or_si256(ge, _mm256_and_si256(nan, _mm256_srai_epi32(meta, 31)));
  const __m256i left = _mm256_add_epi32(base, _mm256_and_si256(meta, _mm256_set1_epi32(0xffff)));
  return _mm256_sub_epi32(left, right);   /* right is -1 where the row goes right */
}

/* Rows in lanes: 16 rows (two vectors) per tree. */
MC_AVX2 static void mc_rows16_avx2(const float* X, float* out) {
  const __m256i lane = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(MC_NUM_FEATURE));
  const __m256i xoff0 = lane;
  const __m256i xoff1 = _mm256_add_epi32(lane, _mm256_set1_epi32(8 * MC_NUM_FEATURE));
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const int single = MC_NUM_CLASS == 1;
  if (single) {
    acc0 = _mm256_loadu_ps(out);
    acc1 = _mm256_loadu_ps(out + 8);
  }
  for (int32_t t = 0; t < MC_NUM_TREE; ++t) {
    const __m256i base = _mm256_set1_epi32(mc_tree_off[t]);
    __m256i i0 = base, i1 = base;
    for (int32_t d = 0; d < mc_tree_depth[t]; ++d) {
      i0 = mc_step8(i0, base, X, xoff0);
      i1 = mc_step8(i1, base, X, xoff1);
    }
    const __m256 v0 = _mm256_i32gather_ps(mc_leaf, i0, 4), v1 = _mm256_i32gather_ps(mc_leaf, i1, 4);
    if (single) {
      acc0 = _mm256_add_ps(acc0, v0);
      acc1 = _mm256_add_ps(acc1, v1);
    } else {
      float v[16];
      _mm256_storeu_ps(v, v0);
      _mm256_storeu_ps(v + 8, v1);
      for (int k = 0; k < 16; ++k) out[k * MC_NUM_CLASS + mc_tree_class[t]] += v[k];
    }
  }
  if (single) {
    _mm256_storeu_ps(out, acc0);
    _mm256_storeu_ps(out + 8, acc1);
  }
}

/* Trees in lanes for one row: 16 trees (two vectors) at a time. */
MC_AVX2 static void mc_trees_avx2(const float* row, float* out) {
  const __m256i zero = _mm256_setzero_si256();
  for (int32_t t = 0; t < MC_NUM_TREE_PADDED; t += 16) {
    const __m256i b0 = _mm256_loadu_si256((const __m256i*)(mc_tree_off + t));
    const __m256i b1 = _mm256_loadu_si256((const __m256i*)(mc_tree_off + t + 8));
    __m256i i0 = b0, i1 = b1;
    for (int32_t d = 0; d < mc_group_depth16[t / 16]; ++d) {
      i0 = mc_step8(i0, b0, row, zero);
      i1 = mc_step8(i1, b1, row, zero);
    }
    float v[16];
    _mm256_storeu_ps(v, _mm256_i32gather_ps(mc_leaf, i0, 4));
    _mm256_storeu_ps(v + 8, _mm256_i32gather_ps(mc_leaf, i1, 4));
    for (int32_t k = 0; k < 16 && t + k < MC_NUM_TREE; ++k) out[mc_tree_class[t + k]] += v[k];
  }
}

MC_AVX2 static void mc_block_avx2(const float* X, int32_t n, float* out) {
  int32_t r = 0;
  for (; r + 16 <= n; r += 16) mc_rows16_avx2(X + (int64_t)r * MC_NUM_FEATURE, out + (int64_t)r * MC_NUM_CLASS);
  for (; r < n; ++r) mc_trees_avx2(X + (int64_t)r * MC_NUM_FEATURE, out + (int64_t)r * MC_NUM_CLASS);
}

#define MC_AVX512 __attribute__((target("avx512f")))

MC_AVX512 static inline __m512i mc_step16(__m512i idx, __m512i base, const float* X, __m512i xoff) {
  const int* words = (const int*)mc_nodes;
  const __m512i meta = _mm512_i32gather_epi32(idx, words + 1, 8);
  const __m512 thr = _mm512_i32gather_ps(idx, (const float*)words, 8);
  const __m512i feature = _mm512_and_si512(_mm512_srli_epi32(meta, 16), _mm512_set1_epi32(0x7fff));
  const __m512 x = _mm512_i32gather_ps(_mm512_add_epi32(xoff, feature), X, 4);
  const __mmask16 ge = _mm512_cmp_ps_mask(x, thr, _CMP_GE_OQ);
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __mmask16 missing_right = _mm512_test_epi32_mask(meta, _mm512_set1_epi32((int)0x80000000u));
  const __mmask16 right = ge | (nan & missing_right);
  const __m512i left = _mm512_add_epi32(base, _mm512_and_si512(meta, _mm512_set1_epi32(0xffff)));
  return _mm512_mask_add_epi32(left, right, left, _mm512_set1_epi32(1));
}

/* Rows in lanes: 32 rows (two vectors) per tree. */
MC_AVX512 static void mc_rows32_avx512(const float* X, float* out) {
  const __m512i lane = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(MC_NUM_FEATURE));
  const __m512i xoff0 = lane;
  const __m512i xoff1 = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * MC_NUM_FEATURE));
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  const int single = MC_NUM_CLASS == 1;
  if (single) {
    acc0 = _mm512_loadu_ps(out);
    acc1 = _mm512_loadu_ps(out + 16);
  }
  for (int32_t t = 0; t < MC_NUM_TREE; ++t) {
    const __m512i base = _mm512_set1_epi32(mc_tree_off[t]);
    __m512i i0 = base, i1 = base;
    for (int32_t d = 0; d < mc_tree_depth[t]; ++d) {
      i0 = mc_step16(i0, base, X, xoff0);
      i1 = mc_step16(i1, base, X, xoff1);
    }
    const __m512 v0 = _mm512_i32gather_ps(i0, mc_leaf, 4), v1 = _mm512_i32gather_ps(i1, mc_leaf, 4);
    if (single) {
      acc0 = _mm512_add_ps(acc0, v0);
      acc1 = _mm512_add_ps(acc1, v1);
    } else {
      float v[32];
      _mm512_storeu_ps(v, v0);
      _mm512_storeu_ps(v + 16, v1);
      for (int k = 0; k < 32; ++k) out[k * MC_NUM_CLASS + mc_tree_class[t]] += v[k];
    }
  }
  if (single) {
    _mm512_storeu_ps(out, acc0);
    _mm512_storeu_ps(out + 16, acc1);
  }
}

/* Trees in lanes for one row: 32 trees (two vectors) at a time. */
MC_AVX512 static void mc_trees_avx512(const float* row, float* out) {
  const __m512i zero = _mm512_setzero_si512();
  for (int32_t t = 0; t < MC_NUM_TREE_PADDED; t += 32) {
    const int two = t + 16 < MC_NUM_TREE_PADDED;
    const __m512i b0 = _mm512_loadu_si512((const void*)(mc_tree_off + t));
    const __m512i b1 = two ? _mm512_loadu_si512((const void*)(mc_tree_off + t + 16)) : b0;
    const int32_t d0 = mc_group_depth16[t / 16], d1 = two ? mc_group_depth16[t / 16 + 1] : 0;
    const int32_t depth = d0 > d1 ? d0 : d1;
    __m512i i0 = b0, i1 = b1;
    for (int32_t d = 0; d < depth; ++d) {
      i0 = mc_step16(i0, b0, row, zero);
      i1 = mc_step16(i1, b1, row, zero);
    }
    float v[32];
    _mm512_storeu_ps(v, _mm512_i32gather_ps(i0, mc_leaf, 4));
    _mm512_storeu_ps(v + 16, _mm512_i32gather_ps(i1, mc_leaf, 4));
    const int32_t lanes = two ? 32 : 16;
    for (int32_t k = 0; k < lanes && t + k < MC_NUM_TREE; ++k) out[mc_tree_class[t + k]] += v[k];
  }
}

MC_AVX512 static void mc_block_avx512(const float* X, int32_t n, float* out) {
  int32_t r = 0;
  for (; r + 32 <= n; r += 32) mc_rows32_avx512(X + (int64_t)r * MC_NUM_FEATURE, out + (int64_t)r * MC_NUM_CLASS);
  for (; r < n; ++r) mc_trees_avx512(X + (int64_t)r * MC_NUM_FEATURE, out + (int64_t)r * MC_NUM_CLASS);
}
#endif

/* ---- arm64 vector walk (NEON) -------------------------------------------- */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>
#define MC_HAVE_NEON 1
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)   /* Linux arch/arm64/include/uapi/asm/hwcap.h */
#endif

/* One level for 4 lanes. NEON has no gather: each lane's node and feature value
 * are loaded one by one, the comparison and the next index are vector code.
 * idx and base are absolute node indices, xoff each lane's row offset in X. */
static inline int32x4_t mc_step4(int32x4_t idx, int32x4_t base, const float* X, const int32_t* xoff) {
  int32_t at[4];
  float thr[4], xs[4];
  uint32_t meta[4];
  vst1q_s32(at, idx);
  for (int k = 0; k < 4; ++k) {
    const struct mc_node node = mc_nodes[at[k]];
    thr[k] = node.threshold;
    meta[k] = node.meta;
    xs[k] = X[xoff[k] + MC_FEATURE(node.meta)];
  }
  const uint32x4_t m = vld1q_u32(meta);
  const float32x4_t x = vld1q_f32(xs);
  const uint32x4_t ge = vcgeq_f32(x, vld1q_f32(thr));          /* all ones where x >= threshold */
  const uint32x4_t nan = vmvnq_u32(vceqq_f32(x, x));           /* all ones where x is missing */
  const uint32x4_t missing_right = vreinterpretq_u32_s32(vshrq_n_s32(vreinterpretq_s32_u32(m), 31));
  const uint32x4_t right = vorrq_u32(ge, vandq_u32(nan, missing_right));
  const int32x4_t left = vaddq_s32(base, vreinterpretq_s32_u32(vandq_u32(m, vdupq_n_u32(0xffffu))));
  return vsubq_s32(left, vreinterpretq_s32_u32(right));      /* right is -1 where the row goes right */
}

static inline float32x4_t mc_leaves4(int32x4_t idx) {
  int32_t at[4];
  float v[4];
  vst1q_s32(at, idx);
  for (int k = 0; k < 4; ++k) v[k] = mc_leaf[at[k]];
  return vld1q_f32(v);
}

/* Rows in lanes: 16 rows (four vectors) per tree. */
static void mc_rows16_neon(const float* X, float* out) {
  int32_t xoff[16];
  for (int k = 0; k < 16; ++k) xoff[k] = k * MC_NUM_FEATURE;
  float32x4_t acc[4];
  const int single = MC_NUM_CLASS == 1;
  for (int v = 0; v < 4; ++v) acc[v] = single ? vld1q_f32(out + 4 * v) : vdupq_n_f32(0.0f);
  for (int32_t t = 0; t < MC_NUM_TREE; ++t) {
    const int32x4_t base = vdupq_n_s32(mc_tree_off[t]);
    int32x4_t i0 = base, i1 = base, i2 = base, i3 = base;
    for (int32_t d = 0; d < mc_tree_depth[t]; ++d) {
      i0 = mc_step4(i0, base, X, xoff);
      i1 = mc_step4(i1, base, X, xoff + 4);
      i2 = mc_step4(i2, base, X, xoff + 8);
      i3 = mc_step4(i3, base, X, xoff + 12);
    }
    const float32x4_t v[4] = {mc_leaves4(i0), mc_leaves4(i1), mc_leaves4(i2), mc_leaves4(i3)};
    if (single) {
      for (int k = 0; k < 4; ++k) acc[k] = vaddq_f32(acc[k], v[k]);
    } else {
      float lanes[16];
      for (int k = 0; k < 4; ++k) vst1q_f32(lanes + 4 * k, v[k]);
      for (int k = 0; k < 16; ++k) out[k * MC_NUM_CLASS + mc_tree_class[t]] += lanes[k];
    }
  }
  if (single) {
    for (int v = 0; v < 4; ++v) vst1q_f32(out + 4 * v, acc[v]);
  }
}

/* Trees in lanes for one row: 16 trees (four vectors) at a time. */
static void mc_trees_neon(const float* row, float* out) {
  static const int32_t zero[4] = {0, 0, 0, 0};
  for (int32_t t = 0; t < MC_NUM_TREE_PADDED; t += 16) {
    const int32x4_t b0 = vld1q_s32(mc_tree_off + t), b1 = vld1q_s32(mc_tree_off + t + 4);
    const int32x4_t b2 = vld1q_s32(mc_tree_off + t + 8), b3 = vld1q_s32(mc_tree_off + t + 12);
    int32x4_t i0 = b0, i1 = b1, i2 = b2, i3 = b3;
    for (int32_t d = 0; d < mc_group_depth16[t / 16]; ++d) {
      i0 = mc_step4(i0, b0, row, zero);
      i1 = mc_step4(i1, b1, row, zero);
      i2 = mc_step4(i2, b2, row, zero);
      i3 = mc_step4(i3, b3, row, zero);
    }
    float v[16];
    vst1q_f32(v, mc_leaves4(i0));
    vst1q_f32(v + 4, mc_leaves4(i1));
    vst1q_f32(v + 8, mc_leaves4(i2));
    vst1q_f32(v + 12, mc_leaves4(i3));
    for (int32_t k = 0; k < 16 && t + k < MC_NUM_TREE; ++k) out[mc_tree_class[t + k]] += v[k];
  }
}

static void mc_block_neon(const float* X, int32_t n, float* out) {
  int32_t r = 0;
  for (; r + 16 <= n; r += 16) mc_rows16_neon(X + (int64_t)r * MC_NUM_FEATURE, out + (int64_t)r * MC_NUM_CLASS);
  for (; r < n; ++r) mc_trees_neon(X + (int64_t)r * MC_NUM_FEATURE, out + (int64_t)r * MC_NUM_CLASS);
}
#endif

/* ---- choosing the version, entry points ---------------------------------- */

static int32_t mc_best_isa = MC_ISA_PORTABLE;
static uint32_t mc_isa_mask = 1u << MC_ISA_PORTABLE;   /* the versions this CPU runs */

/* Runs when the library is loaded: the widest version this CPU runs. */
__attribute__((constructor)) static void mc_choose_isa(void) {
#ifdef MC_HAVE_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) {
    mc_best_isa = MC_ISA_AVX2;
    mc_isa_mask |= 1u << MC_ISA_AVX2;
  }
  if (__builtin_cpu_supports("avx512f")) {
    mc_best_isa = MC_ISA_AVX512;
    mc_isa_mask |= 1u << MC_ISA_AVX512;
  }
#endif
#ifdef MC_HAVE_NEON
  /* Advanced SIMD is mandatory in ARMv8-A, but the kernel says so: ask it. */
  if (getauxval(AT_HWCAP) & HWCAP_ASIMD) {
    mc_best_isa = MC_ISA_NEON;
    mc_isa_mask |= 1u << MC_ISA_NEON;
  }
#endif
}

/* 0 portable, 1 AVX2, 2 AVX-512, 3 NEON: the version mc_predict_dense runs. */
int32_t mc_kernel_isa(void) { return mc_best_isa; }

/* mc_predict_dense with a chosen version; returns -3 when this library or CPU lacks it. */
int32_t mc_predict_dense_isa(const float* X, int64_t n_rows, int32_t n_cols, int32_t pred_margin, float* out,
                             int32_t isa) {
  if (n_cols != MC_NUM_FEATURE) return -1;
  if (isa < 0 || isa > 31 || !(mc_isa_mask >> isa & 1u)) return -3;
  for (int64_t r = 0; r < n_rows; ++r) memcpy(out + r * MC_NUM_CLASS, mc_base, sizeof(float) * MC_NUM_CLASS);
  for (int64_t start = 0; start < n_rows; start += MC_BLOCK_ROWS) {
    const int32_t n = (int32_t)(n_rows - start < MC_BLOCK_ROWS ? n_rows - start : MC_BLOCK_ROWS);
    const float* x = X + start * MC_NUM_FEATURE;
    float* y = out + start * MC_NUM_CLASS;
#ifdef MC_HAVE_X86
    if (isa == MC_ISA_AVX512) {
      mc_block_avx512(x, n, y);
      continue;
    }
    if (isa == MC_ISA_AVX2) {
      mc_block_avx2(x, n, y);
      continue;
    }
#endif
#ifdef MC_HAVE_NEON
    if (isa == MC_ISA_NEON) {
      mc_block_neon(x, n, y);
      continue;
    }
#endif
    mc_block_portable(x, n, y);
  }
  if (!pred_margin) mc_transform(out, n_rows);
  return 0;
}

/* Input: X has n_rows * n_cols floats, NaN = missing. Output: n_rows * MC_NUM_CLASS floats.
 * Returns 0, or -1 when n_cols is not the model's feature count. */
int32_t mc_predict_dense(const float* X, int64_t n_rows, int32_t n_cols, int32_t pred_margin, float* out) {
  return mc_predict_dense_isa(X, n_rows, n_cols, pred_margin, out, mc_best_isa);
}
