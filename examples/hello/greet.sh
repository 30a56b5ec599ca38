#!/bin/sh
# Prints a greeting built from message.txt, the way a real build step would produce an artifact.
echo "$(cat message.txt), built by kiln on $(uname -m)"
