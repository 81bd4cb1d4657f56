// libpng behind return codes. libpng reports errors by longjmp-ing out of the failing call; every
// setjmp lives in this file so no Swift frame is ever jumped over. State that must survive a
// longjmp (open file, buffers to free) sits in a heap-allocated `dr_state`, never in automatic
// variables modified after setjmp.

#include <png.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "png_shim.h"

/// Ancillary chunks libpng may keep (text chunks are the only ones we keep at all).
#define DR_CHUNK_CACHE_MAX 128
/// Largest single chunk allocation, including decompressed zTXt/iTXt text: 4 MiB. Together with
/// the cache limit this bounds what a hostile file can make us allocate for metadata.
#define DR_CHUNK_MALLOC_MAX (4u << 20)
/// PNG's own dimension ceiling.
#define DR_UINT31_MAX 0x7fffffffu

typedef struct dr_state {
    FILE *fp;
    char *err;
    size_t err_len;
    int code;             // returned when libpng longjmps back to us
    unsigned char prefix[24]; // signature + start of IHDR, read before libpng starts
    size_t prefix_len, prefix_pos;
    png_structp png;
    png_infop info;
    unsigned char *pixels;
    png_bytep *rows;
    dr_png_text *text;
    int text_count;
    // Writing: converted text chunks.
    png_text *wtext;
    char **wbufs;
    int wbuf_count;
} dr_state;

static void dr_set_err(char *err, size_t err_len, const char *fmt, ...) {
    if (err == NULL || err_len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/// Records our own error and jumps back to the setjmp of the running entry point.
static void dr_fail(dr_state *st, int code, const char *fmt, ...) {
    st->code = code;
    if (st->err != NULL && st->err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->err, st->err_len, fmt, ap);
        va_end(ap);
    }
    png_longjmp(st->png, 1);
}

static void dr_error_fn(png_structp png, png_const_charp msg) {
    dr_state *st = (dr_state *)png_get_error_ptr(png);
    if (st->err != NULL && st->err_len > 0) {
        if (strcmp(msg, "Out of memory") == 0 || strstr(msg, "out of memory") != NULL)
            st->code = DR_PNG_ERR_MEMORY;
        snprintf(st->err, st->err_len, "%s", msg);
    }
    png_longjmp(png, 1);
}

/// Warnings (e.g. "extra compressed data", an oversized text chunk skipped) are not failures.
static void dr_warning_fn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

// MARK: - Text conversion

/// Latin-1 bytes -> UTF-8 (NUL-terminated, malloc'ed).
static char *dr_latin1_to_utf8(const char *s, size_t n) {
    char *out = malloc(2 * n + 1);
    if (out == NULL) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            out[j++] = (char)c;
        } else {
            out[j++] = (char)(0xC0 | (c >> 6));
            out[j++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[j] = 0;
    return out;
}

/// UTF-8 -> Latin-1 (malloc'ed). Returns NULL with *not_latin1 = 1 when a code point is above
/// U+00FF (or the input is malformed), NULL with *not_latin1 = 0 when out of memory.
static char *dr_utf8_to_latin1(const char *s, int *not_latin1) {
    size_t n = strlen(s);
    *not_latin1 = 0;
    char *out = malloc(n + 1);
    if (out == NULL) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            out[j++] = (char)c;
            i += 1;
            continue;
        }
        // Only the two-byte sequences C2 80 .. C3 BF encode U+0080..U+00FF.
        unsigned char c2 = i + 1 < n ? (unsigned char)s[i + 1] : 0;
        if ((c == 0xC2 || c == 0xC3) && (c2 & 0xC0) == 0x80) {
            out[j++] = (char)(((c & 0x1F) << 6) | (c2 & 0x3F));
            i += 2;
            continue;
        }
        free(out);
        *not_latin1 = 1;
        return NULL;
    }
    out[j] = 0;
    return out;
}

/// PNG keywords: 1-79 Latin-1 printable characters, no leading, trailing or doubled spaces.
static int dr_keyword_ok(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79) return 0;
    if (k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!((c >= 32 && c <= 126) || c >= 161)) return 0;
        if (c == ' ' && i > 0 && k[i - 1] == ' ') return 0;
    }
    return 1;
}

// MARK: - Reading

static void dr_read_fn(png_structp png, png_bytep data, size_t length) {
    dr_state *st = (dr_state *)png_get_io_ptr(png);
    size_t done = 0;
    while (done < length && st->prefix_pos < st->prefix_len)
        data[done++] = st->prefix[st->prefix_pos++];
    if (done < length) {
        size_t n = fread(data + done, 1, length - done, st->fp);
        if (n < length - done) {
            if (ferror(st->fp))
                dr_fail(st, DR_PNG_ERR_IO, "read error: %s", strerror(errno));
            dr_fail(st, DR_PNG_ERR_FORMAT, "file is truncated (unexpected end of file)");
        }
    }
}

static uint32_t dr_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static int dr_check_limits(uint32_t w, uint32_t h, uint32_t max_w, uint32_t max_h, uint64_t max_pixels,
                           char *err, size_t err_len) {
    uint64_t pixels = (uint64_t)w * (uint64_t)h;
    if (w > max_w || h > max_h) {
        dr_set_err(err, err_len, "image is %ux%u pixels, larger than the limit of %ux%u", w, h, max_w, max_h);
        return DR_PNG_ERR_LIMIT;
    }
    if (pixels > max_pixels) {
        dr_set_err(err, err_len, "image is %ux%u = %llu pixels, more than the limit of %llu pixels", w, h,
                   (unsigned long long)pixels, (unsigned long long)max_pixels);
        return DR_PNG_ERR_LIMIT;
    }
    return DR_PNG_OK;
}

static void dr_free_text(dr_png_text *text, int count) {
    if (text == NULL) return;
    for (int i = 0; i < count; i++) {
        free(text[i].key);
        free(text[i].value);
    }
    free(text);
}

static void dr_state_free(dr_state *st) {
    if (st == NULL) return;
    free(st->pixels);
    free(st->rows);
    dr_free_text(st->text, st->text_count);
    free(st->wtext);
    if (st->wbufs != NULL) {
        for (int i = 0; i < st->wbuf_count; i++) free(st->wbufs[i]);
        free(st->wbufs);
    }
    if (st->fp != NULL) fclose(st->fp);
    free(st);
}

/// Opens the file and reads signature + IHDR dimensions ourselves, so oversized images are
/// rejected with a clear message before libpng allocates anything. The bytes read here are fed
/// back to libpng by dr_read_fn.
static int dr_open_and_peek(dr_state *st, const char *path, uint32_t max_w, uint32_t max_h, uint64_t max_pixels) {
    st->fp = fopen(path, "rb");
    if (st->fp == NULL) {
        int e = errno;
        dr_set_err(st->err, st->err_len, "cannot open: %s", strerror(e));
        return e == ENOENT ? DR_PNG_ERR_NOT_FOUND : DR_PNG_ERR_IO;
    }
    size_t n = fread(st->prefix, 1, sizeof st->prefix, st->fp);
    st->prefix_len = n;
    if (n < sizeof st->prefix && ferror(st->fp)) {
        dr_set_err(st->err, st->err_len, "read error: %s", strerror(errno));
        return DR_PNG_ERR_IO;
    }
    if (n < 8 || png_sig_cmp(st->prefix, 0, 8) != 0) {
        dr_set_err(st->err, st->err_len, "not a PNG file (bad signature)");
        return DR_PNG_ERR_FORMAT;
    }
    if (n < sizeof st->prefix) {
        dr_set_err(st->err, st->err_len, "file is truncated (no complete IHDR chunk)");
        return DR_PNG_ERR_FORMAT;
    }
    if (memcmp(st->prefix + 12, "IHDR", 4) != 0) {
        dr_set_err(st->err, st->err_len, "not a valid PNG file (first chunk is not IHDR)");
        return DR_PNG_ERR_FORMAT;
    }
    uint32_t w = dr_be32(st->prefix + 16), h = dr_be32(st->prefix + 20);
    // Zero or > 2^31-1 dimensions are invalid PNGs; libpng reports those itself.
    if (w == 0 || h == 0 || w > DR_UINT31_MAX || h > DR_UINT31_MAX) return DR_PNG_OK;
    return dr_check_limits(w, h, max_w, max_h, max_pixels, st->err, st->err_len);
}

static int dr_create_reader(dr_state *st) {
    st->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, st, dr_error_fn, dr_warning_fn);
    if (st->png == NULL) {
        dr_set_err(st->err, st->err_len, "out of memory (libpng read struct)");
        return DR_PNG_ERR_MEMORY;
    }
    st->info = png_create_info_struct(st->png);
    if (st->info == NULL) {
        dr_set_err(st->err, st->err_len, "out of memory (libpng info struct)");
        return DR_PNG_ERR_MEMORY;
    }
    return DR_PNG_OK;
}

static void dr_destroy_reader(dr_state *st) {
    if (st->png != NULL) png_destroy_read_struct(&st->png, st->info != NULL ? &st->info : NULL, NULL);
    st->png = NULL;
    st->info = NULL;
}

/// Must run under the caller's setjmp: these calls may png_error.
static void dr_configure_reader(dr_state *st, uint32_t max_w, uint32_t max_h) {
    png_structp png = st->png;
    png_set_read_fn(png, st, dr_read_fn);
    png_set_user_limits(png, max_w > DR_UINT31_MAX ? DR_UINT31_MAX : max_w,
                        max_h > DR_UINT31_MAX ? DR_UINT31_MAX : max_h);
    png_set_chunk_cache_max(png, DR_CHUNK_CACHE_MAX);
    png_set_chunk_malloc_max(png, DR_CHUNK_MALLOC_MAX);
    // A corrupt chunk of any kind fails the read instead of being silently dropped.
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    // Skip every ancillary chunk (colour profiles, sPLT, unknown chunks, ...) except text.
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    static const png_byte text_chunks[] = {
        't', 'E', 'X', 't', 0, 'z', 'T', 'X', 't', 0, 'i', 'T', 'X', 't', 0,
    };
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_AS_DEFAULT, text_chunks, 3);
}

/// Copies libpng's text chunks into st->text as UTF-8.
static void dr_collect_text(dr_state *st) {
    png_textp t = NULL;
    int n = png_get_text(st->png, st->info, &t, NULL);
    if (n <= 0 || t == NULL) return;
    st->text = calloc((size_t)n, sizeof(dr_png_text));
    if (st->text == NULL) dr_fail(st, DR_PNG_ERR_MEMORY, "out of memory (text chunks)");
    for (int i = 0; i < n; i++) {
        st->text_count = i + 1;
        st->text[i].key = dr_latin1_to_utf8(t[i].key, strlen(t[i].key));
        const char *v = t[i].text != NULL ? t[i].text : "";
        if (t[i].compression == PNG_ITXT_COMPRESSION_NONE || t[i].compression == PNG_ITXT_COMPRESSION_zTXt) {
            size_t len = t[i].itxt_length > 0 ? t[i].itxt_length : strlen(v);
            char *copy = malloc(len + 1);
            if (copy != NULL) {
                memcpy(copy, v, len);
                copy[len] = 0;
            }
            st->text[i].value = copy;
        } else {
            st->text[i].value = dr_latin1_to_utf8(v, t[i].text_length > 0 ? t[i].text_length : strlen(v));
        }
        if (st->text[i].key == NULL || st->text[i].value == NULL)
            dr_fail(st, DR_PNG_ERR_MEMORY, "out of memory (text chunks)");
    }
}

int dr_png_read_info(const char *path, uint32_t max_width, uint32_t max_height, uint64_t max_pixels,
                     dr_png_info *out, char *err, size_t err_len) {
    if (err != NULL && err_len > 0) err[0] = 0;
    if (out == NULL || path == NULL) {
        dr_set_err(err, err_len, "invalid argument");
        return DR_PNG_ERR_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    dr_state *st = calloc(1, sizeof *st);
    if (st == NULL) {
        dr_set_err(err, err_len, "out of memory");
        return DR_PNG_ERR_MEMORY;
    }
    st->err = err;
    st->err_len = err_len;
    st->code = DR_PNG_ERR_FORMAT;
    int rc = dr_open_and_peek(st, path, max_width, max_height, max_pixels);
    if (rc == DR_PNG_OK) rc = dr_create_reader(st);
    if (rc != DR_PNG_OK) {
        dr_destroy_reader(st);
        dr_state_free(st);
        return rc;
    }
    if (setjmp(png_jmpbuf(st->png))) {
        rc = st->code;
        dr_destroy_reader(st);
        dr_state_free(st);
        return rc;
    }
    dr_configure_reader(st, max_width, max_height);
    png_read_info(st->png, st->info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(st->png, st->info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    dr_collect_text(st);
    out->width = w;
    out->height = h;
    out->bit_depth = depth;
    out->color_type = color;
    out->interlaced = interlace == PNG_INTERLACE_ADAM7;
    out->text = st->text;
    out->text_count = st->text_count;
    st->text = NULL;
    st->text_count = 0;
    dr_destroy_reader(st);
    dr_state_free(st);
    return DR_PNG_OK;
}

int dr_png_read_rgb8(const char *path, uint32_t max_width, uint32_t max_height, uint64_t max_pixels,
                     dr_png_image *out, char *err, size_t err_len) {
    if (err != NULL && err_len > 0) err[0] = 0;
    if (out == NULL || path == NULL) {
        dr_set_err(err, err_len, "invalid argument");
        return DR_PNG_ERR_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    dr_state *st = calloc(1, sizeof *st);
    if (st == NULL) {
        dr_set_err(err, err_len, "out of memory");
        return DR_PNG_ERR_MEMORY;
    }
    st->err = err;
    st->err_len = err_len;
    st->code = DR_PNG_ERR_FORMAT;
    int rc = dr_open_and_peek(st, path, max_width, max_height, max_pixels);
    if (rc == DR_PNG_OK) rc = dr_create_reader(st);
    if (rc != DR_PNG_OK) {
        dr_destroy_reader(st);
        dr_state_free(st);
        return rc;
    }
    if (setjmp(png_jmpbuf(st->png))) {
        rc = st->code;
        dr_destroy_reader(st);
        dr_state_free(st);
        return rc;
    }
    dr_configure_reader(st, max_width, max_height);
    png_structp png = st->png;
    png_infop info = st->info;
    png_read_info(png, info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    // Same check as the IHDR peek; kept in case libpng ever sees other dimensions than we did.
    if (dr_check_limits(w, h, max_width, max_height, max_pixels, err, err_len) != DR_PNG_OK) {
        st->code = DR_PNG_ERR_LIMIT;
        png_longjmp(png, 1);
    }
    if ((uint64_t)w * h > SIZE_MAX / 4 / 2)
        dr_fail(st, DR_PNG_ERR_MEMORY, "image is %ux%u pixels, too large for this machine", w, h);

    // Everything becomes 8-bit RGBA; alpha is composited over white below.
    int has_trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (has_trns) png_set_tRNS_to_alpha(png);
    if (depth == 16) png_set_scale_16(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (!(color & PNG_COLOR_MASK_ALPHA) && !has_trns) png_set_filler(png, 0xFF, PNG_FILLER_AFTER);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);

    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)w * 4)
        dr_fail(st, DR_PNG_ERR_FORMAT, "unexpected decoded row size %zu for width %u", rowbytes, w);
    st->pixels = malloc((size_t)w * h * 4);
    st->rows = malloc((size_t)h * sizeof(png_bytep));
    if (st->pixels == NULL || st->rows == NULL)
        dr_fail(st, DR_PNG_ERR_MEMORY, "out of memory for a %ux%u image", w, h);
    for (png_uint_32 y = 0; y < h; y++) st->rows[y] = st->pixels + (size_t)y * rowbytes;
    png_read_image(png, st->rows);
    png_read_end(png, info);
    dr_collect_text(st);

    // RGBA -> RGB over white, in place (the write index never passes the read index).
    unsigned char *p = st->pixels;
    size_t count = (size_t)w * h;
    for (size_t i = 0; i < count; i++) {
        unsigned a = p[4 * i + 3];
        for (int c = 0; c < 3; c++) {
            unsigned v = p[4 * i + c];
            p[3 * i + c] = (unsigned char)((v * a + 255u * (255u - a) + 127u) / 255u);
        }
    }
    unsigned char *shrunk = realloc(st->pixels, count * 3);
    if (shrunk != NULL) st->pixels = shrunk;

    out->width = w;
    out->height = h;
    out->rgb = st->pixels;
    out->text = st->text;
    out->text_count = st->text_count;
    st->pixels = NULL;
    st->text = NULL;
    st->text_count = 0;
    dr_destroy_reader(st);
    dr_state_free(st);
    return DR_PNG_OK;
}

void dr_png_image_free(dr_png_image *image) {
    if (image == NULL) return;
    free(image->rgb);
    dr_free_text(image->text, image->text_count);
    memset(image, 0, sizeof *image);
}

void dr_png_info_free(dr_png_info *info) {
    if (info == NULL) return;
    dr_free_text(info->text, info->text_count);
    memset(info, 0, sizeof *info);
}

// MARK: - Writing

static void dr_write_fn(png_structp png, png_bytep data, size_t length) {
    dr_state *st = (dr_state *)png_get_io_ptr(png);
    if (fwrite(data, 1, length, st->fp) != length)
        dr_fail(st, DR_PNG_ERR_IO, "write failed: %s", strerror(errno));
}

static void dr_flush_fn(png_structp png) {
    dr_state *st = (dr_state *)png_get_io_ptr(png);
    if (fflush(st->fp) != 0) dr_fail(st, DR_PNG_ERR_IO, "write failed: %s", strerror(errno));
}

/// Builds png_text entries: tEXt with Latin-1 bytes when the value fits, iTXt (UTF-8) otherwise.
static int dr_build_text(dr_state *st, const char *const *keys, const char *const *values, int count) {
    if (count <= 0) return DR_PNG_OK;
    st->wtext = calloc((size_t)count, sizeof(png_text));
    st->wbufs = calloc((size_t)count * 2, sizeof(char *));
    if (st->wtext == NULL || st->wbufs == NULL) {
        dr_set_err(st->err, st->err_len, "out of memory");
        return DR_PNG_ERR_MEMORY;
    }
    for (int i = 0; i < count; i++) {
        if (keys[i] == NULL || values[i] == NULL) {
            dr_set_err(st->err, st->err_len, "text chunk %d has no key or value", i);
            return DR_PNG_ERR_ARGUMENT;
        }
        int not_latin1 = 0;
        char *key = dr_utf8_to_latin1(keys[i], &not_latin1);
        if (key == NULL && !not_latin1) {
            dr_set_err(st->err, st->err_len, "out of memory");
            return DR_PNG_ERR_MEMORY;
        }
        if (key == NULL || !dr_keyword_ok(key)) {
            free(key);
            dr_set_err(st->err, st->err_len,
                       "invalid PNG text keyword '%s' (1-79 printable Latin-1 characters, no leading, "
                       "trailing or double spaces)", keys[i]);
            return DR_PNG_ERR_ARGUMENT;
        }
        st->wbufs[st->wbuf_count++] = key;
        char *value = dr_utf8_to_latin1(values[i], &not_latin1);
        if (value == NULL && !not_latin1) {
            dr_set_err(st->err, st->err_len, "out of memory");
            return DR_PNG_ERR_MEMORY;
        }
        st->wtext[i].key = key;
        if (value != NULL) {
            st->wbufs[st->wbuf_count++] = value;
            st->wtext[i].compression = PNG_TEXT_COMPRESSION_NONE;
            st->wtext[i].text = value;
            st->wtext[i].text_length = strlen(value);
        } else {
            st->wtext[i].compression = PNG_ITXT_COMPRESSION_NONE;
            st->wtext[i].text = (png_charp)values[i];
            st->wtext[i].itxt_length = strlen(values[i]);
            st->wtext[i].lang = NULL;
            st->wtext[i].lang_key = NULL;
        }
    }
    return DR_PNG_OK;
}

int dr_png_write_rgb8(const char *path, const uint8_t *rgb, uint32_t width, uint32_t height,
                      const char *const *text_keys, const char *const *text_values, int text_count,
                      char *err, size_t err_len) {
    if (err != NULL && err_len > 0) err[0] = 0;
    if (path == NULL || rgb == NULL || width == 0 || height == 0 || width > DR_UINT31_MAX ||
        height > DR_UINT31_MAX || (text_count > 0 && (text_keys == NULL || text_values == NULL))) {
        dr_set_err(err, err_len, "invalid image (%ux%u) or arguments", width, height);
        return DR_PNG_ERR_ARGUMENT;
    }
    dr_state *st = calloc(1, sizeof *st);
    if (st == NULL) {
        dr_set_err(err, err_len, "out of memory");
        return DR_PNG_ERR_MEMORY;
    }
    st->err = err;
    st->err_len = err_len;
    // libpng's own errors while writing are argument/format problems; I/O errors set DR_PNG_ERR_IO.
    st->code = DR_PNG_ERR_ARGUMENT;
    int rc = dr_build_text(st, text_keys, text_values, text_count);
    if (rc != DR_PNG_OK) {
        dr_state_free(st);
        return rc;
    }
    // "x": create exclusively, never clobber an existing file.
    st->fp = fopen(path, "wbx");
    if (st->fp == NULL) {
        int e = errno;
        dr_set_err(err, err_len, "cannot create file: %s", strerror(e));
        dr_state_free(st);
        return DR_PNG_ERR_IO;
    }
    st->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, st, dr_error_fn, dr_warning_fn);
    if (st->png != NULL) st->info = png_create_info_struct(st->png);
    if (st->png == NULL || st->info == NULL) {
        if (st->png != NULL) png_destroy_write_struct(&st->png, NULL);
        dr_set_err(err, err_len, "out of memory (libpng write struct)");
        dr_state_free(st);
        unlink(path);
        return DR_PNG_ERR_MEMORY;
    }
    if (setjmp(png_jmpbuf(st->png))) {
        rc = st->code;
        png_destroy_write_struct(&st->png, &st->info);
        dr_state_free(st);
        unlink(path);  // we created it exclusively above, so it is ours to remove
        return rc;
    }
    png_structp png = st->png;
    png_infop info = st->info;
    png_set_write_fn(png, st, dr_write_fn, dr_flush_fn);
    png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    if (text_count > 0) png_set_text(png, info, st->wtext, text_count);
    png_write_info(png, info);
    size_t stride = (size_t)width * 3;
    for (uint32_t y = 0; y < height; y++) png_write_row(png, rgb + (size_t)y * stride);
    png_write_end(png, NULL);

    // Data must be on disk before the caller renames the file into place.
    if (fflush(st->fp) != 0) dr_fail(st, DR_PNG_ERR_IO, "write failed: %s", strerror(errno));
    if (fsync(fileno(st->fp)) != 0) dr_fail(st, DR_PNG_ERR_IO, "fsync failed: %s", strerror(errno));
    FILE *fp = st->fp;
    st->fp = NULL;
    if (fclose(fp) != 0) dr_fail(st, DR_PNG_ERR_IO, "close failed: %s", strerror(errno));
    png_destroy_write_struct(&st->png, &st->info);
    dr_state_free(st);
    return DR_PNG_OK;
}

int darkroom_png_version(void) { return (int)png_access_version_number(); }
