"""The compiled modules: the native VP8 receive path (plugins/webrtc/_rtpin.c), the SIP legs'
G.711 filter bank (plugins/sip/_filterbank.c) and the mixer's small-room mix-minus
(gateway/media/_mixkernel.c). They need only Python's headers and a C compiler; libsrtp comes
from pylibsrtp at run time. Each has a numpy or Python fallback where it is not built."""

from setuptools import Extension, setup

WARNINGS = ["-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]

setup(ext_modules=[
    Extension("plugins.webrtc._rtpin", ["plugins/webrtc/_rtpin.c"], extra_compile_args=["-O2", *WARNINGS]),
    # -O3: the filters' inner loops are vectorised (baseline x86-64 SSE2, no -march)
    Extension("plugins.sip._filterbank", ["plugins/sip/_filterbank.c"], extra_compile_args=["-O3", *WARNINGS]),
    Extension("gateway.media._mixkernel", ["gateway/media/_mixkernel.c"], extra_compile_args=["-O3", *WARNINGS]),
])
