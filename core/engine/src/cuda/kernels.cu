// Chorus CUDA kernels, compiled at run time by NVRTC (no CUDA headers are needed: f16 values are
// carried as their bits and converted with PTX `cvt`).
//
// Layouts (all row-major):
//   x      [t][dim]        f32 residual stream
//   qkv    [t][dim + 2*kv] f32, q then k then v, heads contiguous
//   caches [slot][kv]      f16, one K and one V array per layer; slot = block * bs + pos % bs
//   tables flat u32 block ids; row r's sequence table starts at tab_off[r]
// Every kernel bounds its loops by its arguments; the host checks the arguments once per step.

typedef unsigned short f16;
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)
#define F32_MAX 3.402823466e+38f

__device__ __forceinline__ float h2f(f16 h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ f16 f2h(float f) {
    f16 h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}

struct SumOp {
    __device__ static float id() { return 0.f; }
    __device__ static float op(float a, float b) { return a + b; }
};

struct MaxOp {
    __device__ static float id() { return NEG_INF; }
    __device__ static float op(float a, float b) { return fmaxf(a, b); }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v) {
    for (int o = 16; o > 0; o >>= 1) v = Op::op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Reduces over the block; every thread gets the result. blockDim.x must be a multiple of 32;
// `red` holds 33 floats and may be reused once this returns.
template <typename Op>
__device__ float block_reduce(float v, float* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_reduce<Op>(v);
    if (lane == 0) red[w] = v;
    __syncthreads();
    v = (threadIdx.x < nw) ? red[threadIdx.x] : Op::id();
    if (w == 0) v = warp_reduce<Op>(v);
    if (threadIdx.x == 0) red[32] = v;
    __syncthreads();
    v = red[32];
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_sum(float v, float* red) { return block_reduce<SumOp>(v, red); }
__device__ __forceinline__ float block_max(float v, float* red) { return block_reduce<MaxOp>(v, red); }

// x[r] = table[tokens[r]] (f32 embedding rows). grid: t.
extern "C" __global__ void embed_rows(const float* __restrict__ table, const u32* __restrict__ tokens,
                                      float* __restrict__ x, int dim) {
    int r = blockIdx.x;
    const float* src = table + (size_t)tokens[r] * dim;
    float* dst = x + (size_t)r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = src[i];
}

// x[r] += res[r] (when res is not null); out[r] = f16(x[r] / rms(x[r]) * w). grid: t.
extern "C" __global__ void residual_rmsnorm(float* __restrict__ x, const float* __restrict__ res,
                                            const float* __restrict__ w, f16* __restrict__ out, int dim,
                                            float eps) {
    __shared__ float red[33];
    int r = blockIdx.x;
    float* xr = x + (size_t)r * dim;
    const float* rr = res ? res + (size_t)r * dim : 0;
    float ss = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = xr[i];
        if (rr) {
            v += rr[i];
            xr[i] = v;
        }
        ss += v * v;
    }
    ss = block_sum(ss, red);
    float inv = 1.f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[(size_t)r * dim + i] = f2h(xr[i] * inv * w[i]);
}

// dst[j] = x[idx[j]] + res[idx[j]]: the rows that need logits, with the last residual. grid: n.
extern "C" __global__ void gather_add(const float* __restrict__ x, const float* __restrict__ res,
                                      const u32* __restrict__ idx, float* __restrict__ dst, int dim) {
    int j = blockIdx.x;
    size_t s = (size_t)idx[j] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[(size_t)j * dim + i] = x[s + i] + res[s + i];
}

// Rotates the first rope_dim dims of the first n_rot heads of each qkv row by its position's
// angles; cs holds (cos, sin) pairs, `half` per row, computed on the host in f64. grid: t.
extern "C" __global__ void rope(float* __restrict__ qkv, const float* __restrict__ cs, int qkv_w, int n_rot,
                                int head_dim, int half) {
    int r = blockIdx.x;
    float* row = qkv + (size_t)r * qkv_w;
    const float* c = cs + (size_t)r * half * 2;
    for (int i = threadIdx.x; i < n_rot * half; i += blockDim.x) {
        int h = i / half, j = i % half;
        float* p = row + h * head_dim + 2 * j;
        float a = p[0], b = p[1], co = c[2 * j], si = c[2 * j + 1];
        p[0] = a * co - b * si;
        p[1] = a * si + b * co;
    }
}

// Writes row r's key and value (all KV heads, as f16) into cache slot slot[r]. grid: t.
extern "C" __global__ void kv_store(const float* __restrict__ qkv, f16* __restrict__ kc, f16* __restrict__ vc,
                                    const u32* __restrict__ slot, int qkv_w, int q_dim, int kv) {
    int r = blockIdx.x;
    const float* row = qkv + (size_t)r * qkv_w;
    size_t s = (size_t)slot[r] * kv;
    for (int i = threadIdx.x; i < kv; i += blockDim.x) {
        kc[s + i] = f2h(row[q_dim + i]);
        vc[s + i] = f2h(row[q_dim + kv + i]);
    }
}

#define ATT_TILE 128
#define ATT_MAX_HEAD 256

// Causal GQA attention over the paged cache: one block per (query row, query head), 128 threads.
// Row r sits at position pos[r] and attends to positions 0..=pos[r] of its sequence, whose block
// table starts at tables[tab_off[r]]. Positions are walked in tiles of ATT_TILE with an online
// softmax; a warp scores one position at a time (lanes split the head, so K reads coalesce) and
// each thread accumulates V for its head dims. out[r][h] is written as f16 (the wo GEMM's input).
extern "C" __global__ void attention(const float* __restrict__ qkv, const f16* __restrict__ kc,
                                     const f16* __restrict__ vc, const u32* __restrict__ pos,
                                     const u32* __restrict__ tab_off, const u32* __restrict__ tables,
                                     f16* __restrict__ out, int qkv_w, int n_heads, int group, int head_dim,
                                     int kv, int bs, float scale) {
    __shared__ float q[ATT_MAX_HEAD];
    __shared__ float sc[ATT_TILE];
    __shared__ u32 slots[ATT_TILE];
    __shared__ float red[33];
    int r = blockIdx.x, h = blockIdx.y, kvh = h / group;
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const float* qr = qkv + (size_t)r * qkv_w + h * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) q[d] = qr[d];
    __syncthreads();
    int n = (int)pos[r] + 1;
    const u32* tab = tables + tab_off[r];
    float m = NEG_INF, l = 0.f;
    float acc[ATT_MAX_HEAD / 128] = {0.f, 0.f};
    for (int t0 = 0; t0 < n; t0 += ATT_TILE) {
        int cnt = min(ATT_TILE, n - t0);
        for (int j = threadIdx.x; j < cnt; j += blockDim.x) {
            int p = t0 + j;
            slots[j] = tab[p / bs] * (u32)bs + (u32)(p % bs);
        }
        __syncthreads();
        for (int j = w; j < cnt; j += nw) {
            const f16* k = kc + (size_t)slots[j] * kv + kvh * head_dim;
            float s = 0.f;
            for (int d = lane; d < head_dim; d += 32) s += q[d] * h2f(k[d]);
            s = warp_reduce<SumOp>(s);
            if (lane == 0) sc[j] = s * scale;
        }
        __syncthreads();
        float tm = NEG_INF;
        for (int j = threadIdx.x; j < cnt; j += blockDim.x) tm = fmaxf(tm, sc[j]);
        tm = block_max(tm, red);
        float mn = fmaxf(m, tm);
        float corr = expf(m - mn);
        float ts = 0.f;
        for (int j = threadIdx.x; j < cnt; j += blockDim.x) {
            float e = expf(sc[j] - mn);
            sc[j] = e;
            ts += e;
        }
        ts = block_sum(ts, red);
        l = l * corr + ts;
        for (int a = 0, d = threadIdx.x; d < head_dim; a++, d += blockDim.x) {
            float s = acc[a] * corr;
            for (int j = 0; j < cnt; j++) s += sc[j] * h2f(vc[(size_t)slots[j] * kv + kvh * head_dim + d]);
            acc[a] = s;
        }
        m = mn;
        __syncthreads();
    }
    f16* o = out + (size_t)r * n_heads * head_dim + h * head_dim;
    for (int a = 0, d = threadIdx.x; d < head_dim; a++, d += blockDim.x) o[d] = f2h(acc[a] / l);
}

// act[r] = f16(silu(gate) * up) from the fused gate|up row. grid: t.
extern "C" __global__ void silu_mul(const float* __restrict__ gu, f16* __restrict__ act, int f) {
    int r = blockIdx.x;
    const float* g = gu + (size_t)r * 2 * f;
    for (int i = threadIdx.x; i < f; i += blockDim.x) {
        float a = g[i];
        act[(size_t)r * f + i] = f2h(a / (1.f + expf(-a)) * g[f + i]);
    }
}

__device__ __forceinline__ float clean(float x) {
    return (x != x) ? NEG_INF : fminf(x, F32_MAX);
}

// Greedy choice per logits row, as the host sampler makes it: the largest value (NaN counts as
// -inf), the lowest id on ties; lp = its log-softmax. grid: rows, 256 threads.
extern "C" __global__ void argmax_logprob(const float* __restrict__ logits, int vocab, u32* __restrict__ ids,
                                          float* __restrict__ lp) {
    __shared__ float bv[256];
    __shared__ int bi[256];
    __shared__ float red[33];
    int r = blockIdx.x;
    const float* row = logits + (size_t)r * vocab;
    float best = NEG_INF;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = clean(row[i]);
        if (v > best) {
            best = v;
            idx = i;
        }
    }
    bv[threadIdx.x] = best;
    bi[threadIdx.x] = idx;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float ov = bv[threadIdx.x + s];
            int oi = bi[threadIdx.x + s];
            if (ov > bv[threadIdx.x] || (ov == bv[threadIdx.x] && oi < bi[threadIdx.x])) {
                bv[threadIdx.x] = ov;
                bi[threadIdx.x] = oi;
            }
        }
        __syncthreads();
    }
    float mx = bv[0];
    int id = bi[0] == 0x7fffffff ? 0 : bi[0];
    float sum = 0.f;
    if (mx != NEG_INF)
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) sum += expf(clean(row[i]) - mx);
    sum = block_sum(sum, red);
    if (threadIdx.x == 0) {
        ids[r] = (u32)id;
        lp[r] = (mx == NEG_INF) ? NEG_INF : -logf(sum);
    }
}
