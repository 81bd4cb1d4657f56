#ifndef DARKROOM_PNG_SHIM_H
#define DARKROOM_PNG_SHIM_H

// A small C layer over libpng. libpng reports errors with longjmp, which Swift cannot catch, so
// every setjmp/longjmp stays inside png_shim.c: each function returns one of the DR_PNG_* codes
// below and, on failure, writes a one-line message (NUL-terminated) into `err`.
// This header deliberately does not include <png.h>.

#include <stddef.h>
#include <stdint.h>

/// Return codes.
enum {
    DR_PNG_OK = 0,
    DR_PNG_ERR_NOT_FOUND = 1, ///< the file does not exist
    DR_PNG_ERR_IO = 2,        ///< open/read/write/fsync failed (permissions, disk full, ...)
    DR_PNG_ERR_FORMAT = 3,    ///< not a PNG, truncated, bad CRC, bad zlib data, ...
    DR_PNG_ERR_LIMIT = 4,     ///< image dimensions exceed the caller's limits
    DR_PNG_ERR_MEMORY = 5,    ///< allocation failed
    DR_PNG_ERR_ARGUMENT = 6,  ///< bad argument (zero size, keyword not Latin-1, ...)
};

/// One text chunk, key and value converted to UTF-8 (tEXt/zTXt are Latin-1 on disk, iTXt UTF-8).
typedef struct dr_png_text {
    char *key;
    char *value;
} dr_png_text;

/// Header facts plus the text chunks that precede the image data.
typedef struct dr_png_info {
    uint32_t width;
    uint32_t height;
    int bit_depth;   ///< 1, 2, 4, 8 or 16
    int color_type;  ///< PNG colour type: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA
    int interlaced;  ///< 1 for Adam7
    int text_count;
    dr_png_text *text;
} dr_png_info;

/// A decoded image: 8-bit RGB, row-major, `width * height * 3` bytes, plus every text chunk.
typedef struct dr_png_image {
    uint32_t width;
    uint32_t height;
    uint8_t *rgb;
    int text_count;
    dr_png_text *text;
} dr_png_image;

/// Writes an 8-bit RGB, non-interlaced PNG (zlib level 6) to `path`, which must not exist yet
/// (it is created exclusively). Keys and values are UTF-8; a value that fits Latin-1 goes into a
/// tEXt chunk, any other into an iTXt chunk (as PIL/AUTOMATIC1111 do). Keys must be Latin-1,
/// 1-79 bytes. The data is fsync'ed before the file is closed. On failure a file this call
/// created is removed again.
int dr_png_write_rgb8(const char *path, const uint8_t *rgb, uint32_t width, uint32_t height,
                      const char *const *text_keys, const char *const *text_values, int text_count,
                      char *err, size_t err_len);

/// Reads the header and the text chunks before the image data, without decoding pixels.
/// The dimension limits are checked against IHDR. Free `out` with dr_png_info_free.
int dr_png_read_info(const char *path, uint32_t max_width, uint32_t max_height, uint64_t max_pixels,
                     dr_png_info *out, char *err, size_t err_len);

/// Decodes any PNG (palette, grey, grey+alpha, RGB, RGBA, 1-16 bits, interlaced) to 8-bit RGB.
/// 16-bit samples are scaled with rounding (v * 255 / 65535); alpha (including tRNS) is
/// composited over white: out = round((c * a + 255 * (255 - a)) / 255). No gamma correction.
/// IHDR is checked against the limits before anything is allocated. Free with dr_png_image_free.
int dr_png_read_rgb8(const char *path, uint32_t max_width, uint32_t max_height, uint64_t max_pixels,
                     dr_png_image *out, char *err, size_t err_len);

void dr_png_image_free(dr_png_image *image);
void dr_png_info_free(dr_png_info *info);

/// libpng's run-time version number (e.g. 10639).
int darkroom_png_version(void);

#endif
