// Tells GCC that glibc's libmvec has SIMD versions of the libm functions the
// elementwise kernels call (exp, log, erf, tanh in float and double), so that
// their dense loops vectorize (Note [Dense runs]). glibc declares these itself
// only under -ffast-math, which Quanta does not use (it would change rounding
// in quantization). Not a math library: the functions are glibc's. Define
// QUANTA_NO_LIBMVEC for binaries that must run on an older glibc
// (tools/device_check.sh does): the loops then call the scalar functions.
#pragma once

#include <cmath>

#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && !defined(QUANTA_NO_LIBMVEC) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
// libm.so links libmvec.so as needed (Debian's libm.so is a linker script).
#define QUANTA_LIBMVEC __attribute__((simd("notinbranch")))
extern "C" {
float expf(float) noexcept QUANTA_LIBMVEC;
float logf(float) noexcept QUANTA_LIBMVEC;
float erff(float) noexcept QUANTA_LIBMVEC;
float tanhf(float) noexcept QUANTA_LIBMVEC;
double exp(double) noexcept QUANTA_LIBMVEC;
double log(double) noexcept QUANTA_LIBMVEC;
double erf(double) noexcept QUANTA_LIBMVEC;
double tanh(double) noexcept QUANTA_LIBMVEC;
}
#undef QUANTA_LIBMVEC
#endif
