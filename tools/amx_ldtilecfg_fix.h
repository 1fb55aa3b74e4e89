/* Forced into every C++ file of a llama.cpp build (-include) to make ggml's AMX kernels
   work with compilers whose AMX intrinsics declare _tile_loadconfig's memory operand as
   8 bytes (GCC 12 here): the compiler then drops the stores that fill the 64-byte tile
   configuration, and the first tile instruction faults (docs/engines.md).
   `make` builds without AMX; `make LLAMA_AMX=patched` builds with this header. */
#ifdef __cplusplus
#include <immintrin.h>
#undef _tile_loadconfig
#define _tile_loadconfig(p) __asm__ volatile("ldtilecfg %0" :: "m"(*(const char (*)[64])(p)))
#endif
