# The live env file, as the live release has it (for config.diff; never printed as is). Input: FILE.
if [ -f "$FILE" ]; then cat "$FILE"; fi
