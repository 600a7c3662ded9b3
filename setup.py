"""Build configuration for radseal's compiled engine; project metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "radseal.codec._engine",
            sources=["csrc/rsengine.c"],
            extra_compile_args=["-O3", "-std=c99", "-fno-strict-aliasing"],
            libraries=["m"],  # log2 for the encoder's rate-distortion cost table
        )
    ]
)
