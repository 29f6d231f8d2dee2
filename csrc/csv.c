/*
** csv.c - scim-agent's streaming RFC 4180 tokenizer (see csv.h).
**
** The scanner looks at 64 bytes at a time (AVX2 when the CPU has it, else
** SSE2 where the compiler offers it, a table-driven loop elsewhere), turns
** them into a bit mask of the only bytes that matter (delimiter, quote, CR,
** LF) and walks the set bits, so the bytes inside fields are never looked at
** one by one; the bits a returned record leaves of its last block are kept
** for the next one, so no block is scanned twice. Fields are recorded
** straight into the view array while a record is scanned (their pointers
** are rebased when the buffer moves to take more input); the few fields
** that need it (doubled quotes, lenient text after a closing quote) are
** unescaped in place once the record is complete, so a record split across
** feeds is never re-scanned.
**
** Why this file is long: the three scanners, the record walk and the encoding
** conversion all work on one input buffer and its positions (line, column, bytes
** consumed); split, those internals would become an interface between files.
*/
#include "csv.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t mask_t;  /* one bit per byte of a 64-byte block */

#if defined(__SSE2__) && !defined(SCIM_CSV_NO_SIMD)
#include <emmintrin.h>
#define SCIM_CSV_SSE2 1
/* AVX2 through a per-function target attribute (no -mavx2 needed), picked
** at run time in scim_csv_new; AVX2 CPUs have SSE2 anyway. */
#if (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 5))
#include <immintrin.h>
#define SCIM_CSV_AVX2 1
#define AVX2_FN __attribute__((target("avx2")))
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CTZ(x) ((unsigned)__builtin_ctzll(x))
#else
static unsigned ctz_portable(uint64_t x) {
  unsigned n = 0;
  while (!(x & 1u)) { x >>= 1; n++; }
  return n;
}
#define CTZ(x) ctz_portable(x)
#endif

#define DEFAULT_MAX_FIELD ((size_t)1 << 20)
#define DEFAULT_MAX_ROW ((size_t)16 << 20)
#define DEFAULT_MAX_FIELDS ((size_t)16384)
#define NOPOS ((size_t)-1)
#define BLANK 3                  /* internal: a blank line was skipped */

enum { S_UNQ, S_QUOTED, S_QSEEN };          /* scanner states */
/* Decoding: the first bytes are looked at (DEC_DETECT), then passed through
** (DEC_RAW) or converted (DEC_ICONV). */
enum { DEC_DETECT, DEC_RAW, DEC_ICONV };
/* What opts.encoding said: nothing, UTF-8, another Unicode form, or other. */
enum { ENC_AUTO, ENC_UTF8, ENC_UNICODE, ENC_OTHER };
#define NO_CD ((iconv_t)-1)
/* Field flags, kept in scim_csv_field.quoted while a record is scanned and
** reduced to 0/1 when it is complete. */
enum { F_QUOTED = 1, F_DOUBLED = 2, F_TRAIL = 4 };

struct scim_csv {
  scim_csv_opts o;
  char *buf;
  size_t cap, len;           /* buffer size; bytes [0, len) hold input */
  size_t pos;                /* next byte to scan */
  size_t row_start;          /* first byte of the record being scanned */
  size_t field_start;        /* first content byte of the current field */
  size_t qpos;               /* S_QSEEN: the quote just seen */
  size_t ndoubled;           /* doubled quotes in the current field */
  unsigned fflags;           /* flags of the current field */
  int state;
  int eof, begun, bom_done, skip_lf, done;
  /* UTF-8 validation runs on the bytes >= 0x80 of each scanned block, in
  ** order, each once: u_done is where it stopped; a sequence in progress
  ** needs u_need more continuation bytes, the next one at u_next within
  ** [u_lo, u_hi]; u_err is the first invalid sequence (NOPOS: none), which
  ** fails its record when that record is complete. */
  size_t u_done, u_next, u_lead, u_err;
  unsigned u_need, u_lo, u_hi;
  /* The first control character scanned (NOPOS: none; see allow_control),
  ** which fails its record when that record is complete. */
  size_t c_err;
  size_t line;               /* line of the next byte to scan */
  size_t row_line;           /* line where the record being scanned began */
  size_t out_line;           /* line of the record last returned */
  size_t expect;             /* expected field count, 0: any */
  scim_csv_field *v;         /* fields of the record being scanned, or of
                                the record last returned (nv of them); a
                                quoted field's len runs to its closing quote
                                until the record is complete */
  size_t *tend;              /* F_TRAIL fields: offset of their end (same
                                block as v) */
  size_t nf, nv, fcap;
  size_t nspecial;           /* fields needing unescaping in this record */
  char delim;
  unsigned char cls[256];    /* 1 for the bytes the scanner stops at */
  size_t det_pos, det_count[4];  /* delimiter detection progress */
  int det_state;
  scim_csv_error_info err;
  int isa;                   /* the scanner: 2 AVX2, 1 SSE2, 0 portable */
  /* The special bytes of the block [mc_base, mc_end) not visited yet when
  ** the last record ended in it (mc_end 0: none kept). */
  size_t mc_base, mc_end;
  mask_t mc_mask;
  /* Decoding (see DEC_*). With DEC_ICONV, raw input is fed into rbuf and
  ** converted into buf at once, except an incomplete last sequence kept at
  ** the start of rbuf [0, rlen); rdone raw bytes came before rbuf[0]. After
  ** an invalid sequence (enc_bad) nothing more is converted and the record
  ** reaching buffer offset enc_off fails. */
  int dec, enc, enc_bad;
  const char *detected;      /* scim_csv_encoding */
  iconv_t cd;
  char *rbuf;
  size_t rcap, rlen, rdone, enc_off;
};

static void *default_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud; (void)osize;
  if (nsize == 0) { free(ptr); return NULL; }
  return realloc(ptr, nsize);
}

/* {====================================================== errors */

const char *scim_csv_strerror(int status) {
  switch (status) {
    case SCIM_CSV_ROW: return "row";
    case SCIM_CSV_NEED_MORE: return "need more input";
    case SCIM_CSV_END: return "end of input";
    case SCIM_CSV_ENOMEM: return "not enough memory";
    case SCIM_CSV_EQUOTE: return "quote inside unquoted field";
    case SCIM_CSV_EAFTERQUOTE: return "unexpected character after closing quote";
    case SCIM_CSV_EUNTERMINATED: return "unterminated quoted field";
    case SCIM_CSV_EFIELDSIZE: return "field too large";
    case SCIM_CSV_EROWSIZE: return "record too large";
    case SCIM_CSV_ETOOMANY: return "too many fields";
    case SCIM_CSV_EFIELDCOUNT: return "wrong number of fields";
    case SCIM_CSV_EUTF8: return "invalid UTF-8";
    case SCIM_CSV_EMISUSE: return "API misuse";
    case SCIM_CSV_ECONTROL: return "control character";
    case SCIM_CSV_EBOM: return "unexpected byte-order mark";
    case SCIM_CSV_EENCODING: return "invalid byte sequence for the encoding";
    default: return "unknown status";
  }
}

/*
** Line and column of buffer offset `off` in the record being scanned: counts
** the line breaks (only ever inside quoted fields) from the record start,
** then the characters from the last one. Called before any unescaping.
*/
static void locate(const scim_csv *p, size_t off, size_t *line, size_t *col) {
  const unsigned char *b = (const unsigned char *)p->buf;
  size_t i, ls = p->row_start, ln = p->row_line, c = 1;
  for (i = p->row_start; i < off; i++) {
    if (b[i] == '\r' || (b[i] == '\n' && !(i > p->row_start && b[i - 1] == '\r'))) {
      ln++;
      ls = i + 1;
    } else if (b[i] == '\n') {
      ls = i + 1;
    }
  }
  for (i = ls; i < off; i++)
    if ((b[i] & 0xC0) != 0x80) c++;
  *line = ln;
  *col = c;
}

/* Makes `status` the sticky error, at buffer offset `off`. */
static int fail(scim_csv *p, int status, size_t off) {
  p->err.status = status;
  if (off != NOPOS) locate(p, off, &p->err.line, &p->err.column);
  return status;
}

/* }====================================================== */

/* Which kind of encoding `name` is (ENC_*), by its letters and digits. */
static int encoding_kind(const char *name) {
  char k[8];
  size_t n = 0;
  if (!name || !*name) return ENC_AUTO;
  for (; *name && n < sizeof k - 1; name++) {
    unsigned c = (unsigned char)*name;
    if (c >= 'A' && c <= 'Z') c += 32;
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) k[n++] = (char)c;
    else if (c == '/') break;  /* iconv's //TRANSLIT and the like */
  }
  k[n] = '\0';
  if (strcmp(k, "utf8") == 0) return ENC_UTF8;
  if (strncmp(k, "utf", 3) == 0 || strncmp(k, "ucs", 3) == 0) return ENC_UNICODE;
  return ENC_OTHER;
}

int scim_csv_encoding_known(const char *name) {
  iconv_t cd;
  if (encoding_kind(name) <= ENC_UTF8) return 1;
  cd = iconv_open("UTF-8", name);
  if (cd == NO_CD) return 0;
  iconv_close(cd);
  return 1;
}

scim_csv *scim_csv_new(const scim_csv_opts *opts) {
  scim_csv_opts o;
  scim_csv *p;
  iconv_t cd = NO_CD;
  int enc;
  if (opts) o = *opts; else memset(&o, 0, sizeof o);
  if (o.delimiter == '"' || o.delimiter == '\r' || o.delimiter == '\n' ||
      o.simd < 0 || o.simd > 2)
    return NULL;
  if (!o.alloc) o.alloc = default_alloc;
  if (!o.max_field) o.max_field = DEFAULT_MAX_FIELD;
  if (!o.max_row) o.max_row = DEFAULT_MAX_ROW;
  if (!o.max_fields) o.max_fields = DEFAULT_MAX_FIELDS;
  enc = encoding_kind(o.encoding);
  if (enc > ENC_UTF8 && (cd = iconv_open("UTF-8", o.encoding)) == NO_CD) return NULL;
  o.encoding = NULL;  /* not kept */
  p = (scim_csv *)o.alloc(o.alloc_ud, NULL, 0, sizeof *p);
  if (!p) {
    if (cd != NO_CD) iconv_close(cd);
    return NULL;
  }
  memset(p, 0, sizeof *p);
  p->o = o;
  p->enc = enc;
  p->cd = cd;
  p->dec = DEC_DETECT;
  p->delim = o.delimiter;
  p->line = p->row_line = 1;
  p->u_err = p->c_err = NOPOS;
  p->expect = o.fields == SCIM_CSV_FIELDS_FIRST ? 0 : o.fields;
#ifdef SCIM_CSV_SSE2
  if (o.simd < 2) p->isa = 1;
#endif
#ifdef SCIM_CSV_AVX2
  if (o.simd == 0) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) p->isa = 2;
  }
#endif
  return p;
}

void scim_csv_free(scim_csv *p) {
  if (!p) return;
  if (p->buf) p->o.alloc(p->o.alloc_ud, p->buf, p->cap, 0);
  if (p->v)
    p->o.alloc(p->o.alloc_ud, p->v,
               p->fcap * (sizeof(scim_csv_field) + sizeof(size_t)), 0);
  if (p->rbuf) p->o.alloc(p->o.alloc_ud, p->rbuf, p->rcap, 0);
  if (p->cd != NO_CD) iconv_close(p->cd);
  p->o.alloc(p->o.alloc_ud, p, sizeof *p, 0);
}

/* {====================================================== input */

/* Room for `want` more bytes at the end of buf (see scim_csv_reserve). */
static char *room(scim_csv *p, size_t want, size_t *avail) {
  if (p->cap - p->len < want) {
    size_t drop = p->row_start, i;
    if (drop) {  /* everything before the current record is consumed */
      memmove(p->buf, p->buf + drop, p->len - drop);
      p->len -= drop; p->pos -= drop; p->row_start = 0;
      p->field_start -= drop; p->qpos -= drop; p->det_pos -= drop;
      p->u_done -= drop; p->u_next -= drop; p->u_lead -= drop;
      if (p->u_err != NOPOS) p->u_err -= drop;
      if (p->c_err != NOPOS) p->c_err -= drop;
      if (p->enc_bad) p->enc_off -= drop;
      p->mc_end = 0;
      for (i = 0; i < p->nf; i++) {
        p->v[i].data -= drop;
        if (p->v[i].quoted & F_TRAIL) p->tend[i] -= drop;
      }
    }
    if (p->cap - p->len < want) {
      /* a new block rather than realloc, so the pending views can be
      ** rebased while the old block is still valid */
      size_t ncap = p->cap ? p->cap * 2 : 4096;
      char *nb;
      if (ncap < p->len + want) ncap = p->len + want;
      nb = (char *)p->o.alloc(p->o.alloc_ud, NULL, 0, ncap);
      if (!nb) { p->err.status = SCIM_CSV_ENOMEM; return NULL; }
      if (p->buf) {
        if (p->len) memcpy(nb, p->buf, p->len);
        for (i = 0; i < p->nf; i++)
          p->v[i].data = nb + (p->v[i].data - p->buf);
        p->o.alloc(p->o.alloc_ud, p->buf, p->cap, 0);
      }
      p->buf = nb;
      p->cap = ncap;
    }
  }
  *avail = p->cap - p->len;
  return p->buf + p->len;
}

/*
** Converts rbuf [0, rlen) into buf, keeping an incomplete last sequence.
** An invalid sequence stops the conversion for good (enc_bad). 0 or an
** error status.
*/
static int convert(scim_csv *p) {
  char *in = p->rbuf;
  size_t left = p->rlen, want = left * 3 + 16;  /* enough for most encodings */
  while (left && !p->enc_bad) {
    size_t avail, r;
    char *out = room(p, want, &avail), *o0 = out;
    if (!out) return p->err.status;
    want = avail * 2 + 16;         /* for E2BIG: strictly more room next time */
    r = iconv(p->cd, &in, &left, &out, &avail);
    p->len += (size_t)(out - o0);
    if (r != (size_t)-1 || errno == E2BIG) continue;
    if (errno == EINVAL) break;    /* incomplete: wait for the rest */
    p->enc_bad = 1;                /* EILSEQ */
    p->enc_off = p->len;
    p->err.offset = p->rdone + (size_t)(in - p->rbuf);
    p->err.byte = (unsigned char)*in;
  }
  p->rdone += (size_t)(in - p->rbuf);
  if (left && in != p->rbuf) memmove(p->rbuf, in, left);
  p->rlen = p->enc_bad ? 0 : left;
  return 0;
}

char *scim_csv_reserve(scim_csv *p, size_t want, size_t *avail) {
  if (p->err.status) return NULL;
  if (p->eof) { p->err.status = SCIM_CSV_EMISUSE; return NULL; }
  if (p->dec != DEC_ICONV) return room(p, want, avail);
  if (p->rcap - p->rlen < want) {  /* rbuf holds at most a partial sequence */
    size_t ncap = p->rlen + want;
    char *nb = (char *)p->o.alloc(p->o.alloc_ud, p->rbuf, p->rcap, ncap);
    if (!nb) { p->err.status = SCIM_CSV_ENOMEM; return NULL; }
    p->rbuf = nb;
    p->rcap = ncap;
  }
  *avail = p->rcap - p->rlen;
  return p->rbuf + p->rlen;
}

void scim_csv_commit(scim_csv *p, size_t n) {
  if (p->dec != DEC_ICONV) {
    if (n <= p->cap - p->len) p->len += n;
  } else if (n <= p->rcap - p->rlen) {
    if (p->enc_bad) return;  /* nothing more is converted */
    p->rlen += n;
    if (convert(p) != 0) return;  /* the status is sticky */
  }
}

int scim_csv_feed(scim_csv *p, const void *data, size_t len) {
  size_t avail;
  char *dst = scim_csv_reserve(p, len, &avail);
  if (!dst) return p->err.status;
  if (len) memcpy(dst, data, len);
  scim_csv_commit(p, len);
  return p->err.status ? p->err.status : SCIM_CSV_NEED_MORE;
}

void scim_csv_finish(scim_csv *p) {
  if (p->dec == DEC_ICONV && p->rlen && !p->enc_bad) {  /* cut inside a sequence */
    p->enc_bad = 1;
    p->enc_off = p->len;
    p->err.offset = p->rdone;
    p->err.byte = (unsigned char)p->rbuf[0];
    p->err.incomplete = 1;
  }
  if (!p->enc_bad) p->eof = 1;  /* else the error ends the input */
}

/*
** Looks at the first bytes fed (buf [0, len)) for a byte-order mark and
** picks the decoding: 0 when done, else a status.
*/
static int find_bom(const unsigned char *b, size_t n, int more, const char **name);

static int decide(scim_csv *p) {
  const char *name = NULL;
  int k = find_bom((const unsigned char *)p->buf, p->len, !p->eof, &name);
  size_t skip = 0;
  if (k < 0) return SCIM_CSV_NEED_MORE;
  p->dec = DEC_RAW;
  if (p->enc == ENC_AUTO) p->detected = "UTF-8";
  if (k > 0) {
    int utf8 = name[4] == '8';
    if (p->enc == ENC_OTHER || (p->enc == ENC_UTF8 && !utf8 && p->o.check_utf8)) {
      p->err.bom = name;
      return fail(p, SCIM_CSV_EBOM, 0);
    }
    if (p->enc == ENC_AUTO && !utf8) {
      p->cd = iconv_open("UTF-8", name);
      if (p->cd == NO_CD) return fail(p, SCIM_CSV_ENOMEM, NOPOS);
      p->detected = name;
      skip = (size_t)k;
    }
  }
  if (p->cd != NO_CD) {  /* the bytes so far go through the converter */
    size_t n = p->len - skip, avail;
    int eof = p->eof;
    char *dst;
    p->dec = DEC_ICONV;
    p->eof = 0;          /* let reserve run; finish is redone below */
    dst = scim_csv_reserve(p, n ? n : 1, &avail);
    if (!dst) return p->err.status;
    if (n) memcpy(dst, p->buf + skip, n);
    p->len = 0;
    p->rdone = skip;
    scim_csv_commit(p, n);
    if (p->err.status) return p->err.status;
    if (eof) scim_csv_finish(p);
  }
  return 0;
}

/* }====================================================== */

/* {====================================================== scanning */

/*
** Grows the field arrays, up to max_fields. Both live in one block (the
** views, then the trail ends), so a failed allocation leaves the old block
** intact; `at` is where an error is reported.
*/
static int grow_fields(scim_csv *p, size_t at) {
  const size_t each = sizeof(scim_csv_field) + sizeof(size_t);
  size_t n = p->fcap ? p->fcap * 2 : 32;
  scim_csv_field *nv;
  size_t *nt;
  if (p->fcap >= p->o.max_fields) return fail(p, SCIM_CSV_ETOOMANY, at);
  if (n > p->o.max_fields) n = p->o.max_fields;
  nv = (scim_csv_field *)p->o.alloc(p->o.alloc_ud, NULL, 0, n * each);
  if (!nv) return fail(p, SCIM_CSV_ENOMEM, NOPOS);
  nt = (size_t *)(void *)(nv + n);
  if (p->v) {
    if (p->nf) {
      memcpy(nv, p->v, p->nf * sizeof *nv);
      memcpy(nt, p->tend, p->nf * sizeof *nt);
    }
    p->o.alloc(p->o.alloc_ud, p->v, p->fcap * each, 0);
  }
  p->v = nv;
  p->tend = nt;
  p->fcap = n;
  return 0;
}

/* Records the field from p->field_start to `end` (the general case; scan
** inlines the common one). 0 or an error status. */
static int push_field(scim_csv *p, size_t end, unsigned flags, size_t nd) {
  scim_csv_field *v;
  size_t len;
  if (p->nf == p->fcap) {
    int st = grow_fields(p, p->field_start - (flags & F_QUOTED));
    if (st) return st;
  }
  v = &p->v[p->nf];
  v->data = p->buf + p->field_start;
  v->quoted = (int)flags;
  if (flags & F_QUOTED) {
    v->len = p->qpos - p->field_start;    /* raw, up to the closing quote */
    len = v->len - nd;
    if (flags & F_TRAIL) {
      p->tend[p->nf] = end;
      len += end - p->qpos - 1;
    }
    if (flags & (F_DOUBLED | F_TRAIL)) p->nspecial++;
  } else {
    v->len = len = end - p->field_start;
  }
  p->nf++;
  if (len > p->o.max_field)
    return fail(p, SCIM_CSV_EFIELDSIZE, p->field_start - (flags & F_QUOTED));
  return 0;
}

/*
** Validates the bytes >= 0x80 of the block at `base` (bit i of `hm` for
** b[base + i]) not seen yet, continuing the sequence in progress. ASCII
** bytes need no check: a sequence is broken by one exactly when its next
** continuation byte is not at u_next.
*/
static void utf8_block(scim_csv *p, const unsigned char *b, size_t base,
                       mask_t hm, size_t n) {
  if (p->u_done > base)
    hm = p->u_done - base >= n ? 0 : hm & ~(((mask_t)1 << (p->u_done - base)) - 1);
  if (p->u_done < base + n) p->u_done = base + n;
  while (hm && p->u_err == NOPOS) {
    size_t at = base + CTZ(hm);
    unsigned c = b[at];
    hm &= hm - 1;
    if (p->u_need) {
      if (at != p->u_next || c < p->u_lo || c > p->u_hi) {
        p->u_err = p->u_lead;
        break;
      }
      p->u_need--;
      p->u_next = at + 1;
      p->u_lo = 0x80;
      p->u_hi = 0xBF;
      continue;
    }
    p->u_lead = at;
    p->u_next = at + 1;
    p->u_lo = 0x80;
    p->u_hi = 0xBF;
    if (c < 0xC2 || c > 0xF4) { p->u_err = at; break; }
    if (c < 0xE0) p->u_need = 1;
    else if (c < 0xF0) {
      p->u_need = 2;
      if (c == 0xE0) p->u_lo = 0xA0;       /* overlong */
      else if (c == 0xED) p->u_hi = 0x9F;  /* UTF-16 surrogates */
    } else {
      p->u_need = 3;
      if (c == 0xF0) p->u_lo = 0x90;       /* overlong */
      else if (c == 0xF4) p->u_hi = 0x8F;  /* beyond U+10FFFF */
    }
  }
}

/*
** The record [row_start, rec_end) is complete and its fields recorded:
** checks it, turns the fields into views (unescaping quoted ones in place)
** and starts the next record at p->pos.
*/
static int finish_record(scim_csv *p, size_t rec_end) {
  size_t i;
  if (rec_end - p->row_start > p->o.max_row)
    return fail(p, SCIM_CSV_EROWSIZE, p->row_start);
  if (p->c_err < rec_end) {
    p->err.byte = (unsigned char)p->buf[p->c_err];
    return fail(p, SCIM_CSV_ECONTROL, p->c_err);
  }
  if (p->expect == 0 && p->o.fields == SCIM_CSV_FIELDS_FIRST)
    p->expect = p->nf;
  if (p->expect && p->nf != p->expect) {
    p->err.fields = p->nf;
    p->err.expected = p->expect;
    if (p->nf > p->expect) {
      const scim_csv_field *x = &p->v[p->expect];
      return fail(p, SCIM_CSV_EFIELDCOUNT,
                  (size_t)(x->data - p->buf) - (size_t)(x->quoted & F_QUOTED));
    }
    return fail(p, SCIM_CSV_EFIELDCOUNT, rec_end);
  }
  if (p->o.check_utf8) {
    if (p->u_err < rec_end) return fail(p, SCIM_CSV_EUTF8, p->u_err);
    if (p->u_need && p->u_lead < rec_end)  /* cut short by ASCII or the end */
      return fail(p, SCIM_CSV_EUTF8, p->u_lead);
  }
  for (i = 0; p->nspecial && i < p->nf; i++) {
    scim_csv_field *v = &p->v[i];
    char *w, *s, *e;
    if (!(v->quoted & (F_DOUBLED | F_TRAIL))) continue;
    w = s = p->buf + (v->data - p->buf);
    e = s + v->len;                        /* the closing quote */
    if (v->quoted & F_DOUBLED) {           /* "" -> " up to the closing quote */
      while (s < e) {
        const char *q = (const char *)memchr(s, '"', (size_t)(e - s));
        size_t n = q ? (size_t)(q - s) + 1 : (size_t)(e - s);
        if (w != s) memmove(w, s, n);
        w += n;
        s += n + (q != NULL);              /* skip the second quote of the pair */
      }
    } else {
      w = e;
    }
    if (v->quoted & F_TRAIL) {             /* lenient: text after the quote */
      size_t n = p->tend[i] - (size_t)(e - p->buf) - 1;
      memmove(w, e + 1, n);
      w += n;
    }
    v->len = (size_t)(w - v->data);
    v->quoted = 1;
    p->nspecial--;
  }
  p->nspecial = 0;
  p->nv = p->nf;
  p->nf = 0;
  p->out_line = p->row_line;
  p->row_line = p->line;
  p->row_start = p->field_start = p->pos;
  return SCIM_CSV_ROW;
}

/*
** The byte-order mark the input starts with: its length (UTF-8's is skipped)
** and in *name the encoding it names; 0 when there is none, -1 when the
** bytes so far (n < 4, more to come) could still begin one.
*/
static int find_bom(const unsigned char *b, size_t n, int more, const char **name) {
  static const struct { const char *bytes, *name; size_t len; } boms[] = {
    { "\xFF\xFE\0\0", "UTF-32LE", 4 }, { "\0\0\xFE\xFF", "UTF-32BE", 4 },
    { "\xEF\xBB\xBF", "UTF-8", 3 }, { "\xFF\xFE", "UTF-16LE", 2 },
    { "\xFE\xFF", "UTF-16BE", 2 }
  };
  size_t i;
  for (i = 0; i < sizeof boms / sizeof boms[0]; i++) {
    size_t k = boms[i].len;
    if (n < k) {  /* a prefix of this mark: wait for more */
      if (more && (n == 0 || memcmp(b, boms[i].bytes, n) == 0)) return -1;
      continue;
    }
    if (memcmp(b, boms[i].bytes, k) == 0) { *name = boms[i].name; return (int)k; }
  }
  return 0;
}

/* Delimiter detection and the BOM: 0 when done, else a status. */
static int begin(scim_csv *p) {
  static const char cand[4] = { ',', ';', '\t', '|' };
  int i;
  if (!p->bom_done) {
    const char *name = NULL;
    int k = find_bom((const unsigned char *)p->buf + p->pos, p->len - p->pos, !p->eof,
                     &name);
    if (k < 0) return SCIM_CSV_NEED_MORE;
    if (k == 3) p->pos += 3;  /* UTF-8's; the others were seen by decide */
    p->row_start = p->field_start = p->det_pos = p->pos;
    p->bom_done = 1;
  }
  if (!p->delim) {
    /* The first line, read with the scanner's quoting rules for every
    ** candidate at once: det_state 0 field start, 1 inside an unquoted
    ** field, 2 quoted, 3 quote seen inside quotes. */
    const unsigned char *b = (const unsigned char *)p->buf;
    size_t j = p->det_pos;
    int best = 0, found = 0, ds = p->det_state;
    for (; j < p->len && !found; j++) {
      unsigned c = b[j];
      if (ds == 2) { if (c == '"') ds = 3; continue; }
      if (c == '"') { ds = ds == 0 ? 2 : ds == 3 ? 2 : 1; continue; }
      if (c == '\r' || c == '\n') { found = 1; break; }
      ds = 1;
      for (i = 0; i < 4; i++)
        if (c == (unsigned char)cand[i]) { p->det_count[i]++; ds = 0; }
    }
    p->det_pos = j;
    p->det_state = ds;
    /* the same limit as the record will have, wherever the input is cut */
    if (j - p->row_start > p->o.max_row)
      return fail(p, SCIM_CSV_EROWSIZE, p->row_start);
    if (!found && !p->eof) return SCIM_CSV_NEED_MORE;
    for (i = 1; i < 4; i++)
      if (p->det_count[i] > p->det_count[best]) best = i;
    p->delim = cand[best];
  }
  memset(p->cls, 0, sizeof p->cls);
  p->cls[(unsigned char)p->delim] = p->cls['"'] = 1;
  p->cls['\r'] = p->cls['\n'] = 1;
  p->begun = 1;
  return 0;
}

/* Content bytes of the unfinished current field scanned so far. */
static size_t partial_field(const scim_csv *p) {
  if (!(p->fflags & F_QUOTED)) return p->len - p->field_start;
  if (p->state == S_QUOTED) return p->len - p->field_start - p->ndoubled;
  if (p->state == S_QSEEN) return p->qpos - p->field_start - p->ndoubled;
  return p->qpos - p->field_start - p->ndoubled + (p->len - p->qpos - 1);
}

#ifdef SCIM_CSV_SSE2
/* The special bytes (bit i: b[i] is the delimiter, '"', CR or LF) of the 64
** bytes at b, in *hm those >= 0x80, and in *cm those < 0x20 other than TAB
** (CR, LF and a control delimiter are among the special bytes: the caller
** masks them out). */
static ALWAYS_INLINE mask_t masks_sse2(const unsigned char *b, unsigned delim,
                                       mask_t *hm, mask_t *cm) {
  const __m128i vd = _mm_set1_epi8((char)delim), vq = _mm_set1_epi8('"');
  const __m128i vcr = _mm_set1_epi8('\r'), vlf = _mm_set1_epi8('\n');
  const __m128i v20 = _mm_set1_epi8(0x20), vtab = _mm_set1_epi8('\t');
  mask_t mask = 0, hi = 0, ctl = 0;
  int k;
  for (k = 0; k < 4; k++) {  /* four 16-byte quarters make one 64-bit mask */
    const __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(b + 16 * k));
    const __m128i m = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(x, vd), _mm_cmpeq_epi8(x, vq)),
        _mm_or_si128(_mm_cmpeq_epi8(x, vcr), _mm_cmpeq_epi8(x, vlf)));
    /* signed: bytes >= 0x80 compare below 0x20 too, and are taken out */
    const __m128i c = _mm_andnot_si128(_mm_cmpeq_epi8(x, vtab), _mm_cmplt_epi8(x, v20));
    mask |= (mask_t)(unsigned)_mm_movemask_epi8(m) << (16 * k);
    hi |= (mask_t)(unsigned)_mm_movemask_epi8(x) << (16 * k);
    ctl |= (mask_t)(unsigned)_mm_movemask_epi8(c) << (16 * k);
  }
  *hm = hi;
  *cm = ctl & ~hi;
  return mask;
}
#endif

#ifdef SCIM_CSV_AVX2
/* The same with two 32-byte halves. Plain `inline`, not always_inline: it
** can only be inlined into AVX2 code, which is the only caller. */
static AVX2_FN inline mask_t masks_avx2(const unsigned char *b, unsigned delim,
                                        mask_t *hm, mask_t *cm) {
  const __m256i vd = _mm256_set1_epi8((char)delim), vq = _mm256_set1_epi8('"');
  const __m256i vcr = _mm256_set1_epi8('\r'), vlf = _mm256_set1_epi8('\n');
  const __m256i v20 = _mm256_set1_epi8(0x20), vtab = _mm256_set1_epi8('\t');
  const __m256i x0 = _mm256_loadu_si256((const __m256i *)(const void *)b);
  const __m256i x1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32));
  const __m256i m0 = _mm256_or_si256(
      _mm256_or_si256(_mm256_cmpeq_epi8(x0, vd), _mm256_cmpeq_epi8(x0, vq)),
      _mm256_or_si256(_mm256_cmpeq_epi8(x0, vcr), _mm256_cmpeq_epi8(x0, vlf)));
  const __m256i m1 = _mm256_or_si256(
      _mm256_or_si256(_mm256_cmpeq_epi8(x1, vd), _mm256_cmpeq_epi8(x1, vq)),
      _mm256_or_si256(_mm256_cmpeq_epi8(x1, vcr), _mm256_cmpeq_epi8(x1, vlf)));
  const __m256i c0 = _mm256_andnot_si256(_mm256_cmpeq_epi8(x0, vtab),
                                         _mm256_cmpgt_epi8(v20, x0));
  const __m256i c1 = _mm256_andnot_si256(_mm256_cmpeq_epi8(x1, vtab),
                                         _mm256_cmpgt_epi8(v20, x1));
  *hm = (mask_t)(unsigned)_mm256_movemask_epi8(x0) |
        (mask_t)(unsigned)_mm256_movemask_epi8(x1) << 32;
  *cm = ((mask_t)(unsigned)_mm256_movemask_epi8(c0) |
         (mask_t)(unsigned)_mm256_movemask_epi8(c1) << 32) & ~*hm;
  return (mask_t)(unsigned)_mm256_movemask_epi8(m0) |
         (mask_t)(unsigned)_mm256_movemask_epi8(m1) << 32;
}
#endif

/*
** Scans from p->pos to the end of the record or of the buffered input.
** The state lives in locals in the hot loop and is written back before any
** call that reads it and on exit. An unquoted field ended by the delimiter
** (most fields) is recorded inline; everything else goes to push_field.
** `simd` is a constant in each instance below: 2 AVX2, 1 SSE2, 0 none.
*/
static ALWAYS_INLINE int scan_impl(scim_csv *p, const int simd) {
  const unsigned char *b = (const unsigned char *)p->buf;
  const unsigned d = (unsigned char)p->delim;
  const int lenient = p->o.lenient;
  const size_t maxf = p->o.max_field;
  const int check_utf8 = p->o.check_utf8;
  const int check_ctl = !p->o.allow_control;
  size_t pos = p->pos, end = p->len, nd = p->ndoubled, fs = p->field_start;
  size_t nf = p->nf, fcap = p->fcap;
  scim_csv_field *v = p->v;
  unsigned fflags = p->fflags;
  int state = p->state, st;
#define SYNC() (p->nf = nf, p->field_start = fs)
#define RELOAD() (nf = p->nf, fcap = p->fcap, v = p->v)
  (void)simd;
  while (pos < end) {
    size_t base = pos;
    mask_t mask;
    if (p->mc_end > pos && p->mc_base <= pos) {
      /* the rest of the block the last record ended in (pos may have
      ** stepped over the LF of a CR LF pair) */
      base = p->mc_base;
      mask = p->mc_mask & (~(mask_t)0 << (pos - base));
      pos = p->mc_end;
      p->mc_end = 0;
#ifdef SCIM_CSV_SSE2
    } else if (simd && end - pos >= 64) {
      mask_t hm, cm;
#ifdef SCIM_CSV_AVX2
      if (simd == 2) mask = masks_avx2(b + pos, d, &hm, &cm); else
#endif
      mask = masks_sse2(b + pos, d, &hm, &cm);
      if (hm && check_utf8) utf8_block(p, b, pos, hm, 64);
      cm &= ~mask;
      if (cm && check_ctl && p->c_err == NOPOS) p->c_err = pos + CTZ(cm);
      pos += 64;
#endif
    } else {  /* the end of the input, or no SIMD */
      size_t i, n = end - pos < 64 ? end - pos : 64;
      mask_t hm = 0, cm = 0;
      mask = 0;
      for (i = 0; i < n; i++) {
        unsigned c = b[pos + i];
        mask |= (mask_t)p->cls[c] << i;
        hm |= (mask_t)(c >> 7) << i;
        cm |= (mask_t)(c < 0x20 && c != '\t') << i;
      }
      if (hm && check_utf8) utf8_block(p, b, pos, hm, n);
      cm &= ~mask;
      if (cm && check_ctl && p->c_err == NOPOS) p->c_err = pos + CTZ(cm);
      pos += n;
    }
    while (mask) {
      size_t at = base + CTZ(mask);
      unsigned c = b[at];
      mask &= mask - 1;
      if (state == S_UNQ && c == d && !fflags && nf < fcap && at - fs <= maxf) {
        v[nf].data = (const char *)b + fs;   /* the common case, inline */
        v[nf].len = at - fs;
        v[nf].quoted = 0;
        nf++;
        fs = at + 1;
        continue;
      }
      switch (state) {
        case S_QUOTED:
          if (c == '"') {
            state = S_QSEEN;
            p->qpos = at;
          } else if (c == '\r' || (c == '\n' && b[at - 1] != '\r')) {
            p->line++;
          }
          continue;
        case S_QSEEN:
          if (at == p->qpos + 1) {
            if (c == '"') { state = S_QUOTED; fflags |= F_DOUBLED; nd++; continue; }
          } else {  /* a byte that is none of ", delimiter, CR, LF */
            if (!lenient) { SYNC(); return fail(p, SCIM_CSV_EAFTERQUOTE, p->qpos + 1); }
            fflags |= F_TRAIL;
          }
          state = S_UNQ;
          /* fall through - c ends the field or is a literal quote */
        default:
          if (c == d) {
            SYNC();
            if ((st = push_field(p, at, fflags, nd)) != 0) return st;
            RELOAD();
            fs = at + 1;
            fflags = 0;
            continue;
          }
          if (c == '"') {
            if (at == fs && !fflags) {
              state = S_QUOTED;
              fflags = F_QUOTED;
              nd = 0;
              fs = at + 1;
            } else if (!lenient) {
              SYNC();
              return fail(p, SCIM_CSV_EQUOTE, at);
            }
            continue;
          }
          /* CR or LF: the record ends; keep the rest of the block */
          p->mc_base = base;
          p->mc_end = pos;
          p->mc_mask = mask;
          if (nf == 0 && at == p->row_start) {  /* blank line */
            p->pos = at + 1;
            p->skip_lf = c == '\r';
            p->line++;
            p->row_line = p->line;
            p->row_start = p->field_start = at + 1;
            return BLANK;
          }
          SYNC();
          if ((st = push_field(p, at, fflags, nd)) != 0) return st;
          p->pos = at + 1;
          p->skip_lf = c == '\r';
          p->line++;
          p->state = S_UNQ;
          p->fflags = 0;
          p->ndoubled = 0;
          return finish_record(p, at);
      }
    }
  }
  SYNC();
#undef SYNC
#undef RELOAD
  p->pos = end;
  p->state = state;
  p->fflags = fflags;
  p->ndoubled = nd;
  if (!p->eof) {  /* bound the memory a record can hold */
    if (end - p->row_start > p->o.max_row)
      return fail(p, SCIM_CSV_EROWSIZE, p->row_start);
    if (partial_field(p) > p->o.max_field)
      return fail(p, SCIM_CSV_EFIELDSIZE, p->field_start - (fflags & F_QUOTED));
    return SCIM_CSV_NEED_MORE;
  }
  if (state == S_QUOTED)
    return fail(p, SCIM_CSV_EUNTERMINATED, p->field_start - 1);
  if (state == S_QSEEN && end > p->qpos + 1) {
    if (!lenient) return fail(p, SCIM_CSV_EAFTERQUOTE, p->qpos + 1);
    fflags |= F_TRAIL;
  }
  if (p->row_start == end && p->nf == 0) {
    p->done = 1;
    return SCIM_CSV_END;
  }
  if ((st = push_field(p, end, fflags, nd)) != 0) return st;
  p->state = S_UNQ;
  p->fflags = 0;
  p->ndoubled = 0;
  return finish_record(p, end);
}

/* The instances, and the one p->isa picks (see scim_csv_new). */
static int scan_portable(scim_csv *p) {
  return scan_impl(p, 0);
}

#ifdef SCIM_CSV_SSE2
static int scan_sse2(scim_csv *p) {
  return scan_impl(p, 1);
}
#endif

#ifdef SCIM_CSV_AVX2
static AVX2_FN int scan_avx2(scim_csv *p) {
  return scan_impl(p, 2);
}
#endif

static int scan(scim_csv *p) {
#ifdef SCIM_CSV_AVX2
  if (p->isa == 2) return scan_avx2(p);
#endif
#ifdef SCIM_CSV_SSE2
  if (p->isa == 1) return scan_sse2(p);
#endif
  return scan_portable(p);
}

/* NEED_MORE, or the encoding error that ends the converted input. */
static int need_more(scim_csv *p) {
  if (p->enc_bad) return fail(p, SCIM_CSV_EENCODING, p->enc_off);
  return SCIM_CSV_NEED_MORE;
}

int scim_csv_next_row(scim_csv *p) {
  int st;
  if (p->err.status) return p->err.status;
  if (p->done) return SCIM_CSV_END;
  if (p->dec == DEC_DETECT && (st = decide(p)) != 0) return st;
  if (!p->begun && (st = begin(p)) != 0)
    return st == SCIM_CSV_NEED_MORE ? need_more(p) : st;
  for (;;) {
    if (p->skip_lf) {  /* the LF of a CR LF pair, possibly in the next block */
      if (p->pos < p->len) {
        if (p->buf[p->pos] == '\n') p->row_start = p->field_start = ++p->pos;
        p->skip_lf = 0;
      } else if (!p->eof) {
        return need_more(p);
      } else {
        p->skip_lf = 0;
      }
    }
    st = scan(p);
    if (st != BLANK) return st == SCIM_CSV_NEED_MORE ? need_more(p) : st;
  }
}

/* }====================================================== */

const scim_csv_field *scim_csv_row(const scim_csv *p, size_t *nfields) {
  *nfields = p->nv;
  return p->v;
}

size_t scim_csv_row_line(const scim_csv *p) {
  return p->out_line;
}

const char *scim_csv_encoding(const scim_csv *p) {
  return p->detected;
}

char scim_csv_delimiter(const scim_csv *p) {
  return p->begun || p->o.delimiter ? p->delim : 0;
}

const scim_csv_error_info *scim_csv_error(const scim_csv *p) {
  return &p->err;
}
