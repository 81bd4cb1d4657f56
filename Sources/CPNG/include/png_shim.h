#ifndef DARKROOM_PNG_SHIM_H
#define DARKROOM_PNG_SHIM_H
// Placeholder; the PNG shim is implemented in png_shim.c.
int darkroom_png_version(void);
#endif
