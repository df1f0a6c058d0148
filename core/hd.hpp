#pragma once
// Marks functions that compile for both the host and CUDA devices (nvcc sees __host__ __device__).
#if defined(__CUDACC__)
#define GPPF_HD __host__ __device__
#define GPPF_INLINE __forceinline__
#else
#define GPPF_HD
#define GPPF_INLINE inline
#endif
