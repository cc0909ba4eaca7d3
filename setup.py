from setuptools import find_packages, setup

setup(
    name="tfeed",
    version="0.1.0",
    description="(image URL, label) pairs in, a tf.data.Dataset that model.fit trains on at full speed out",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tfeed", "tfeed.*"]),
    package_data={"tfeed.kernels": ["core/*.cc", "core/*.h", "fetch/*.cc", "fetch/*.h", "shared/*.cc", "shared/*.h"],
                  "tfeed.service": ["bind_host.c"]},
    python_requires=">=3.9",
    # `tensorflow` (not tensorflow-cpu): GPU users install tensorflow[and-cuda] on top.
    install_requires=[
        "tensorflow>=2.13",
        "numpy",
        "requests",
        # 3.12: TCPConnector(socket_factory=) for the address policy; 3.13.3: bounded decompression (CVE-2025-69223).
        "aiohttp>=3.13.3",
        "opencv-python-headless",
        # AVIF: a third less CPU than OpenCV's decoder, and its irot/imir orientation applied.
        "pillow>=11.3",
    ],
    extras_require={
        "parquet": ["pyarrow"],
        "io": ["tensorflow-io"],
        "viz": ["matplotlib"],
        "progress": ["tqdm"],
        "test": ["pytest", "pytest-timeout", "pytest-xdist", "scikit-image", "scikit-learn", "pillow", "pyarrow",
                 "matplotlib", "tqdm", "psutil", "nbclient", "nbformat", "ipykernel", "trustme"],
        "bench": ["psutil", "matplotlib", "scikit-image", "scikit-learn", "pillow", "tensorpack==0.11"],
    },
    entry_points={"console_scripts": ["tfeed=tfeed.app.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
