// A C entry point to FlashAttention-3's fp8 forward kernel for Hopper (sm_90a), for the `fa3_fp8`
// attention backend (wan_runtime/fa3_attention.py), which calls it through ctypes.
//
// Why a C entry point rather than flash-attn-3's own torch extension: that extension has no wheel and
// links against one torch build; this library links against nothing but the CUDA runtime, so one
// build serves any torch of the same CUDA major. It instantiates exactly one kernel, the one Wan's
// self-attention needs (e4m3 in, bf16 out, head dim 128, no mask, no varlen, no split, no paging), so
// it compiles in minutes on a CPU-only machine (bench/fa3_build.sh).
//
// Layout contract (checked by the Python side before the call): q [B, Lq, H, 128], k and v
// [B, Lk, H, 128], all e4m3 with the head dim contiguous; o [B, Lq, H, 128] bf16; lse fp32
// [B, H, Lq] (the kernel writes it; we do not read it); descales fp32, one per (batch, head), read with
// the strides given (0, 0 for one scale per tensor). Strides are in elements.

#include <cstring>

// FlashAttention-3's CHECK_CUDA / CHECK_CUTLASS end the process on a failed launch; in a library called
// from Python they throw instead, and the entry point turns that into the returned error code.
#include "cuda_check.h"
#undef CHECK_CUDA
#undef CHECK_CUTLASS
struct CudaFailure { cudaError_t code; };
#define CHECK_CUDA(call)                                                  \
    do {                                                                  \
        cudaError_t status_ = (call);                                     \
        if (status_ != cudaSuccess) { throw CudaFailure{status_}; }       \
    } while (0)
#define CHECK_CUTLASS(call)                                                               \
    do {                                                                                  \
        if ((call) != cutlass::Status::kSuccess) {                                        \
            cudaError_t last_ = cudaGetLastError();                                       \
            throw CudaFailure{last_ != cudaSuccess ? last_ : cudaErrorLaunchFailure};     \
        }                                                                                 \
    } while (0)

#include "flash.h"
#include "flash_fwd_launch_template.h"

extern "C" {

// Returns 0 on success, else a cudaError_t; the message is available from wan_fa3_error_string.
int wan_fa3_fp8_forward(
    void* q, void* k, void* v, void* o, void* lse,
    float* q_descale, float* k_descale, float* v_descale,
    long long descale_batch_stride, long long descale_head_stride,
    int batch, int seqlen_q, int seqlen_k, int heads, int head_dim,
    long long q_batch_stride, long long q_row_stride, long long q_head_stride,
    long long k_batch_stride, long long k_row_stride, long long k_head_stride,
    long long v_batch_stride, long long v_row_stride, long long v_head_stride,
    long long o_batch_stride, long long o_row_stride, long long o_head_stride,
    float softmax_scale, int num_sm, void* stream) {
    if (head_dim != 128) { return static_cast<int>(cudaErrorInvalidValue); }
    Flash_fwd_params params;
    std::memset(&params, 0, sizeof(params));  // every pointer we do not set stays null: no varlen, paging, rotary
    params.is_e4m3 = true;
    params.q_ptr = q; params.k_ptr = k; params.v_ptr = v; params.o_ptr = o;
    params.softmax_lse_ptr = lse;
    params.q_batch_stride = q_batch_stride; params.q_row_stride = q_row_stride; params.q_head_stride = q_head_stride;
    params.k_batch_stride = k_batch_stride; params.k_row_stride = k_row_stride; params.k_head_stride = k_head_stride;
    params.v_batch_stride = v_batch_stride; params.v_row_stride = v_row_stride; params.v_head_stride = v_head_stride;
    params.v_dim_stride = 1;
    params.o_batch_stride = o_batch_stride; params.o_row_stride = o_row_stride; params.o_head_stride = o_head_stride;
    params.q_descale_ptr = q_descale; params.k_descale_ptr = k_descale; params.v_descale_ptr = v_descale;
    params.q_descale_batch_stride = params.k_descale_batch_stride = params.v_descale_batch_stride = descale_batch_stride;
    params.q_descale_head_stride = params.k_descale_head_stride = params.v_descale_head_stride = descale_head_stride;
    params.b = params.b_k = batch;
    params.h = params.h_k = heads;
    params.seqlen_q = seqlen_q; params.seqlen_k = seqlen_k;
    params.seqlen_q_rounded = (seqlen_q + 127) / 128 * 128;
    params.seqlen_k_rounded = (seqlen_k + 127) / 128 * 128;
    params.d = params.d_rounded = params.dv = params.dv_rounded = head_dim;
    params.scale_softmax = softmax_scale;
    params.p_dropout = 1.f; params.rp_dropout = 1.f; params.p_dropout_in_uint8_t = 255;
    // No window: the kernel's "left/right" reach covers the whole sequence.
    params.window_size_left = seqlen_k - 1; params.window_size_right = seqlen_q - 1;
    params.num_splits = 1;
    params.page_size = 1;
    params.arch = 90;
    params.num_sm = num_sm;
    try {
        run_flash_fwd<90, 128, 128, /*ClusterM=*/1, cutlass::float_e4m3_t, cutlass::bfloat16_t,
                      /*Is_causal=*/false, /*Is_local=*/false, /*Has_softcap=*/false, /*Varlen=*/false,
                      /*PagedKVNonTMA=*/false, /*AppendKV=*/false, /*HasQv=*/false, /*PackGQA=*/false,
                      /*Split=*/false, /*V_colmajor=*/false>(params, static_cast<cudaStream_t>(stream));
    } catch (const CudaFailure& failure) {
        return static_cast<int>(failure.code);
    } catch (...) {
        return static_cast<int>(cudaErrorUnknown);
    }
    return static_cast<int>(cudaGetLastError());
}

const char* wan_fa3_error_string(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // extern "C"
