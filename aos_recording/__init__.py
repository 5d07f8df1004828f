"""The recording library: what producers import to write evidence, every evidence hash, the verifier."""
