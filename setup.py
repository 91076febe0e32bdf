"""The one compiled module: the native VP8 receive path (plugins/webrtc/_rtpin.c). It needs
only Python's headers and a C compiler; libsrtp comes from pylibsrtp at run time."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("plugins.webrtc._rtpin", ["plugins/webrtc/_rtpin.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers"])])
