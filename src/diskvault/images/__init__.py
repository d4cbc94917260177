"""Image library: safe inspection, import, conversion and resizing of disk images."""
