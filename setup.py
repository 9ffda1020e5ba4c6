"""Setup shim: all metadata lives in setup.cfg."""
from setuptools import setup

if __name__ == "__main__":
    setup()
