/*
** csv_fuzz.c - libFuzzer target for the CSV tokenizer (make fuzz).
**
** The first input byte picks the options (delimiter or detection, lenient,
** UTF-8 check, field-count check, small limits, scanner, control check and encoding); the rest is CSV. Each input
** is parsed three ways: fed whole, in 1-byte blocks through
** reserve/commit, and in blocks whose sizes come from the data itself. The
** records must be identical and all three must fail or none; with no size
** limit in play the error and its position must match too. ASan and UBSan
** catch the rest (every field view is read in full).
*/
#include "csv.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct out { unsigned char *s; size_t n, cap; } out;

static void put(out *o, const void *s, size_t n) {
  if (o->n + n > o->cap) {
    o->cap = (o->n + n) * 2 + 64;
    o->s = (unsigned char *)realloc(o->s, o->cap);
    if (!o->s) abort();
  }
  memcpy(o->s + o->n, s, n);
  o->n += n;
}

typedef struct result { out rows; int status; size_t line, col; } result;

static void drain(scim_csv *p, result *r, int *more) {
  for (;;) {
    int st = scim_csv_next_row(p);
    if (st == SCIM_CSV_ROW) {
      size_t n, i, line = scim_csv_row_line(p);
      const scim_csv_field *f = scim_csv_row(p, &n);
      put(&r->rows, &line, sizeof line);
      put(&r->rows, &n, sizeof n);
      for (i = 0; i < n; i++) {
        put(&r->rows, &f[i].len, sizeof f[i].len);
        put(&r->rows, f[i].data, f[i].len);
        put(&r->rows, &f[i].quoted, sizeof f[i].quoted);
      }
      continue;
    }
    if (st == SCIM_CSV_NEED_MORE) return;
    r->status = st;
    if (st < 0) {
      r->line = scim_csv_error(p)->line;
      r->col = scim_csv_error(p)->column;
    }
    *more = 0;
    return;
  }
}

/* mode 0: whole; 1: 1-byte blocks via reserve/commit; 2: data-driven blocks */
static void run(const scim_csv_opts *o, const uint8_t *d, size_t n, int mode,
                result *r) {
  scim_csv *p = scim_csv_new(o);
  size_t at = 0;
  int more = 1;
  if (!p) abort();
  memset(r, 0, sizeof *r);
  while (more && at < n) {
    size_t len = mode == 0 ? n : mode == 1 ? 1 : 1 + (d[at] % 23);
    if (len > n - at) len = n - at;
    if (mode == 1) {
      size_t avail;
      char *dst = scim_csv_reserve(p, len, &avail);
      if (!dst) { drain(p, r, &more); break; }
      memcpy(dst, d + at, len);
      scim_csv_commit(p, len);
    } else if (scim_csv_feed(p, d + at, len) < 0) {
      drain(p, r, &more);
      break;
    }
    at += len;
    drain(p, r, &more);
  }
  if (more) {
    scim_csv_finish(p);
    drain(p, r, &more);
  }
  scim_csv_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char delims[4] = { 0, ',', ';', '\t' };
  scim_csv_opts o;
  result r[3];
  int m, limited;
  if (size < 1) return 0;
  memset(&o, 0, sizeof o);
  o.delimiter = delims[data[0] & 3];
  o.lenient = (data[0] >> 2) & 1;
  o.check_utf8 = (data[0] >> 3) & 1;
  o.fields = (data[0] >> 4) & 1 ? SCIM_CSV_FIELDS_FIRST : SCIM_CSV_FIELDS_ANY;
  limited = (data[0] >> 5) & 1;
  if (limited) { o.max_field = 7; o.max_row = 40; o.max_fields = 5; }
  o.simd = (data[0] >> 6) % 3;  /* every scanner, checked against the other feeds */
  /* the 4th value: portable, controls allowed, Windows-1252 converted (a
  ** UTF-16/32 byte-order mark converts the others) */
  o.allow_control = (data[0] >> 6) == 3;
  o.encoding = (data[0] >> 6) == 3 ? "cp1252" : NULL;
  for (m = 0; m < 3; m++) run(&o, data + 1, size - 1, m, &r[m]);
  for (m = 1; m < 3; m++) {
    if (r[m].rows.n != r[0].rows.n ||
        (r[0].rows.n && memcmp(r[m].rows.s, r[0].rows.s, r[0].rows.n) != 0))
      abort();  /* records depend on how the input was split */
    if ((r[m].status < 0) != (r[0].status < 0)) abort();
    if (!limited && (r[m].status != r[0].status || r[m].line != r[0].line ||
                     r[m].col != r[0].col))
      abort();
  }
  for (m = 0; m < 3; m++) free(r[m].rows.s);
  return 0;
}
