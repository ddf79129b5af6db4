# Locate LibTorch. A user with their own LibTorch sets Torch_DIR (or CMAKE_PREFIX_PATH) and this does nothing.
# Otherwise LibTorch comes from the torch wheel in the project's virtual environment (.venv, made by scripts/setup.sh),
# found through torch.utils.cmake_prefix_path.
set(FM_PYTHON "${CMAKE_CURRENT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH "Python whose torch wheel provides LibTorch")

if(NOT Torch_DIR AND NOT DEFINED ENV{Torch_DIR})
  if(NOT EXISTS "${FM_PYTHON}")
    message(FATAL_ERROR "fm: no LibTorch. Run scripts/setup.sh (it makes .venv with the torch wheel), "
                        "or point Torch_DIR at your LibTorch's share/cmake/Torch.")
  endif()
  execute_process(COMMAND "${FM_PYTHON}" -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE _fm_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _fm_rc)
  if(NOT _fm_rc EQUAL 0)
    message(FATAL_ERROR "fm: ${FM_PYTHON} cannot import torch; re-run scripts/setup.sh or set Torch_DIR.")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_fm_torch_prefix}")
endif()

# A CUDA build of LibTorch needs the CUDA toolkit at configure time (no GPU needed).
if(NOT CUDAToolkit_ROOT AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CUDAToolkit_ROOT /usr/local/cuda)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "")
endif()
# Torch's CMake files want an architecture list when no GPU is present to query; these cover V100 .. H200 and newer.
if(NOT TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
