#!/bin/sh
# The llama.cpp CMake flags of an image's llama-cpp-python build, printed for CMAKE_ARGS.
# $1: the CPU options (an image runs on other CPUs than its builder's: never -march=native).
# On x86, -mno-amx-* keeps ggml's AMX kernels out whatever $1 says, as the Makefile's
# local build does: GCC 12 miscompiles their tile configuration (docs/engines.md).
case "$(uname -m)" in
    x86_64)
        no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        echo "$1 -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'" ;;
    *)
        echo "-DGGML_NATIVE=OFF" ;;
esac
