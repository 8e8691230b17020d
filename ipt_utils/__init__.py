"""ipt_utils: the package behind the Instruction Pre-Training reproduction notebooks."""
__version__ = "0.1.0"
