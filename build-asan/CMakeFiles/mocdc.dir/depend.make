# Empty dependencies file for mocdc.
# This may be replaced when dependencies are built.
