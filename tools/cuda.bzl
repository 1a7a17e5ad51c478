"""cuda_library: compiles .cu files with nvcc (sm_80 and sm_90) into a cc_library.

The objects are built only when //:cuda_enabled holds (--config=cuda); in the
default build the library is empty and nvcc never runs.
"""

_NVCC = "/usr/local/cuda/bin/nvcc"
# sm_80 (A100) and sm_90 (H100/H200) machine code, plus PTX the driver can
# compile for later GPUs.
_ARCHS = "-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=[sm_90,compute_90]"

def cuda_library(name, srcs, cu_srcs, hdrs = [], cu_hdrs = [], deps = [], **kwargs):
    """srcs: C++ sources (gcc); cu_srcs: CUDA sources (nvcc); cu_hdrs: headers they include."""
    objs = []
    for cu in cu_srcs:
        obj = name + "_" + cu.replace("/", "_").replace(".cu", "") + ".pic.o"
        native.genrule(
            name = obj.replace(".", "_"),
            srcs = [cu] + cu_hdrs,
            outs = [obj],
            cmd = " ".join([
                _NVCC,
                "-std=c++20 -O3 --expt-relaxed-constexpr -diag-suppress 186",
                _ARCHS,
                "-Xcompiler -fPIC -I.",
                "-c $(location " + cu + ") -o $@",
            ]),
            tags = ["manual"],
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = select({
            "//:cuda_enabled": srcs + objs,
            "//conditions:default": [],
        }),
        hdrs = hdrs,
        deps = deps + select({
            "//:cuda_enabled": ["@cuda"],
            "//conditions:default": [],
        }),
        **kwargs
    )
