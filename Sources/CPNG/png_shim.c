#include <png.h>
#include "png_shim.h"
int darkroom_png_version(void) { return (int)png_access_version_number(); }
