/* CPU dispatch for hot loops: the project builds without -march, so a loop that should use AVX2 is
 * compiled twice, for a given target and for baseline x86-64, and the loader picks one per CPU (GCC's
 * target_clones, an ifunc). One guard for every user; the target stays the caller's choice. */
#ifndef DTRAIN_COMMON_CPU_DISPATCH_H
#define DTRAIN_COMMON_CPU_DISPATCH_H

/* DTR_CPU_CLONES(target): a function attribute, e.g. DTR_CPU_CLONES("avx2") static void f(...).
 *
 * The target decides the numbers, so each caller names its own: "arch=x86-64-v3" (AVX2 + FMA) lets
 * GCC contract a * b + c into one fused multiply-add, whose rounding differs from the baseline clone's
 * in the last place; "avx2" alone allows no FMA, so its clone computes the same bits as the baseline.
 * Loops whose result must be the same on every rank whatever its CPU (the collectives' reductions) take
 * "avx2"; the model's kernels, which only need the same bits run after run on one machine, take
 * "arch=x86-64-v3".
 *
 * Empty (one plain version) on other compilers and CPUs, and under ASan and TSan: the ifunc resolvers
 * run before the sanitizer runtime is up, and the instrumentation does not mix with them. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define DTR_CPU_CLONES(target) __attribute__((target_clones(target, "default")))
#else
#define DTR_CPU_CLONES(target)
#endif

#endif
