# cuDNN and NCCL live inside the toolkit on some machines and in the system folders on others
# (DESIGN.md, "Verified on these machines"): search both.
set(_gppf_cuda_roots ${CUDAToolkit_LIBRARY_ROOT} ${CUDAToolkit_TARGET_DIR} /usr/local/cuda /usr)
find_path(GPPF_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS}
          PATHS ${_gppf_cuda_roots} PATH_SUFFIXES include include/x86_64-linux-gnu REQUIRED)
find_library(GPPF_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR}
             PATHS ${_gppf_cuda_roots} PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu REQUIRED)
find_path(GPPF_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS}
          PATHS ${_gppf_cuda_roots} PATH_SUFFIXES include REQUIRED)
find_library(GPPF_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR}
             PATHS ${_gppf_cuda_roots} PATH_SUFFIXES lib64 lib lib/x86_64-linux-gnu REQUIRED)
add_library(gppf_cudnn INTERFACE)
target_include_directories(gppf_cudnn INTERFACE ${GPPF_CUDNN_INCLUDE})
target_link_libraries(gppf_cudnn INTERFACE ${GPPF_CUDNN_LIBRARY})
add_library(gppf_nccl INTERFACE)
target_include_directories(gppf_nccl INTERFACE ${GPPF_NCCL_INCLUDE})
target_link_libraries(gppf_nccl INTERFACE ${GPPF_NCCL_LIBRARY})
message(STATUS "gppf: cuDNN ${GPPF_CUDNN_LIBRARY}, NCCL ${GPPF_NCCL_LIBRARY}")
