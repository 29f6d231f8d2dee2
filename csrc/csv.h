/*
** csv.h - scim-agent's streaming RFC 4180 tokenizer. Pure C99, no Lua.
**
** Lifecycle (libcsv / zsv style):
**
**   scim_csv *p = scim_csv_new(&opts);          NULL when out of memory
**   loop:
**     st = scim_csv_next_row(p);
**     SCIM_CSV_ROW:       fields = scim_csv_row(p, &n); use them
**     SCIM_CSV_NEED_MORE: scim_csv_feed(p, data, len)  (or reserve+commit),
**                         or scim_csv_finish(p) at end of input
**     SCIM_CSV_END:       done
**     < 0:                error; scim_csv_error(p) says where
**   scim_csv_free(p);
**
** Ownership: the parser owns one buffer holding the unconsumed input (the
** record being scanned plus whatever was fed after it); it never holds more
** than one record plus one fed block, so memory is bounded by the limits
** below. Field views point into that buffer and stay valid until the next
** call of scim_csv_next_row, scim_csv_feed, scim_csv_reserve or
** scim_csv_free. Quoted fields are unescaped in place when their record is
** returned, so views are never NUL-terminated.
**
** Positions: lines are 1-based physical lines (a CR, an LF or a CR LF pair
** ends one, also inside quoted fields); columns are 1-based characters
** (UTF-8 code points) within the line. A UTF-8 byte-order mark at the start
** is skipped and does not count.
**
** Encodings (opts.encoding): input in another encoding is converted to UTF-8
** with iconv as it is fed (a sequence cut between feeds is completed by the
** next one), and tokenized as UTF-8. Lines and columns count characters, so
** they are the same in the original text; an invalid sequence is reported
** at the line and column of the character it would have been, with its
** byte offset in the original input.
*/
#ifndef SCIM_CSV_H
#define SCIM_CSV_H

#include <stddef.h>

/* Status codes: >= 0 progress, < 0 errors (sticky once returned). */
enum {
  SCIM_CSV_ROW = 1,          /* a record is available via scim_csv_row */
  SCIM_CSV_NEED_MORE = 2,    /* feed more input or call scim_csv_finish */
  SCIM_CSV_END = 0,          /* finished and every record returned */
  SCIM_CSV_ENOMEM = -1,      /* the allocator failed */
  SCIM_CSV_EQUOTE = -2,      /* quote inside an unquoted field (strict) */
  SCIM_CSV_EAFTERQUOTE = -3, /* character after a closing quote (strict) */
  SCIM_CSV_EUNTERMINATED = -4, /* end of input inside a quoted field */
  SCIM_CSV_EFIELDSIZE = -5,  /* field longer than max_field bytes */
  SCIM_CSV_EROWSIZE = -6,    /* record longer than max_row bytes */
  SCIM_CSV_ETOOMANY = -7,    /* more than max_fields fields in a record */
  SCIM_CSV_EFIELDCOUNT = -8, /* field count differs from the expected one */
  SCIM_CSV_EUTF8 = -9,       /* invalid UTF-8 (check_utf8) */
  SCIM_CSV_EMISUSE = -10,    /* API misuse, e.g. feed after finish */
  SCIM_CSV_ECONTROL = -11,   /* a C0 control character in a value */
  SCIM_CSV_EBOM = -12,       /* a byte-order mark the encoding contradicts */
  SCIM_CSV_EENCODING = -13   /* input invalid in opts.encoding */
};

/* The allocator has lua_Alloc's contract: nsize 0 frees, else (re)allocates. */
typedef void *(*scim_csv_alloc)(void *ud, void *ptr, size_t osize,
                                size_t nsize);

/* Expected field count: a number, none (0), or the first record's count. */
#define SCIM_CSV_FIELDS_ANY ((size_t)0)
#define SCIM_CSV_FIELDS_FIRST ((size_t)-1)

typedef struct scim_csv_opts {
  char delimiter;        /* 0: detect from the first line among , ; TAB |
                            (most frequent outside quotes; ties in that order;
                            ',' when none). Never '"', CR or LF. */
  int lenient;           /* 1: a stray quote in an unquoted field, or text
                            after a closing quote, is literal (else error) */
  int check_utf8;        /* 1: invalid UTF-8 is SCIM_CSV_EUTF8, and a
                            UTF-16/32 byte-order mark SCIM_CSV_EBOM */
  int allow_control;     /* 0 (the default): a C0 control character
                            (U+0000..U+001F) other than TAB, CR, LF and the
                            delimiter, anywhere in a record, is
                            SCIM_CSV_ECONTROL; 1: accepted as data. CR and
                            LF end lines, or are data inside quotes. */
  size_t fields;         /* SCIM_CSV_FIELDS_ANY / _FIRST / exact count */
  size_t max_field;      /* bytes per field after unescaping; 0: 1 MiB */
  size_t max_row;        /* raw bytes per record; 0: 16 MiB */
  size_t max_fields;     /* fields per record; 0: 16384 */
  int simd;              /* 0: the fastest scanner the CPU has (AVX2,
                            SSE2 or portable); 1: no AVX2; 2: portable
                            only. The results are the same: for tests and
                            benchmarks. */
  scim_csv_alloc alloc;  /* NULL: malloc/realloc/free */
  void *alloc_ud;
  const char *encoding;  /* the input's encoding, any name iconv knows
                            ("cp1252", "latin1", "UTF-16LE", ...), converted
                            to UTF-8 as it is fed (iconv's own memory is
                            malloc'd). NULL or "": UTF-8, or UTF-16/32 when
                            the input starts with their byte-order mark.
                            "UTF-8" given: such a mark is SCIM_CSV_EBOM
                            (with check_utf8). A non-Unicode encoding given:
                            any byte-order mark (UTF-8's too) is
                            SCIM_CSV_EBOM. Read by scim_csv_new only. */
} scim_csv_opts;

/* A field view: `len` bytes at `data`, valid until the next row (see top). */
typedef struct scim_csv_field {
  const char *data;
  size_t len;
  int quoted;            /* written in quotes ("" is quoted, empty is not) */
} scim_csv_field;

/* Where and what the sticky error is (all zero before any error). */
typedef struct scim_csv_error_info {
  int status;
  size_t line, column;   /* for EUNTERMINATED: where the quote opened;
                            EFIELDSIZE/EROWSIZE: where the field/record began;
                            EFIELDCOUNT: first extra field, or the record's
                            end when it has too few */
  size_t fields, expected;  /* EFIELDCOUNT: counts */
  unsigned byte;         /* ECONTROL: the control character */
  const char *bom;       /* EBOM: "UTF-8", "UTF-16LE", "UTF-16BE",
                            "UTF-32LE" or "UTF-32BE" (static) */
  size_t offset;         /* EENCODING: byte offset in the original input of
                            the invalid or truncated sequence */
  int incomplete;        /* EENCODING: the input ends inside a sequence */
} scim_csv_error_info;

typedef struct scim_csv scim_csv;

/* Creates a parser; opts may be NULL for defaults. NULL when out of memory
** or when opts are invalid (delimiter '"', CR or LF; simd not 0, 1 or 2;
** an encoding iconv does not know: see scim_csv_encoding_known). */
scim_csv *scim_csv_new(const scim_csv_opts *opts);

/* 1 when `name` is an encoding the input can be converted from, else 0. */
int scim_csv_encoding_known(const char *name);

/* Frees the parser and its buffer; NULL is a no-op. */
void scim_csv_free(scim_csv *p);

/* Copies len bytes of input. SCIM_CSV_NEED_MORE on success, or an error. */
int scim_csv_feed(scim_csv *p, const void *data, size_t len);

/* Zero-copy feeding: returns room for at least `want` bytes (its size in
** *avail) at the end of the buffer, to be filled and then announced with
** scim_csv_commit(p, n), n <= *avail. NULL (with the status in
** scim_csv_error) when out of memory, after an error, or after finish.
** Feed only after SCIM_CSV_NEED_MORE: the buffer then holds at most the
** unfinished record (bounded by max_row) plus what is fed. */
char *scim_csv_reserve(scim_csv *p, size_t want, size_t *avail);
void scim_csv_commit(scim_csv *p, size_t n);

/* Marks the end of input: the last record may lack a line break. */
void scim_csv_finish(scim_csv *p);

/* Scans for the next record (see the status codes). */
int scim_csv_next_row(scim_csv *p);

/* The fields of the record last returned, and their count. */
const scim_csv_field *scim_csv_row(const scim_csv *p, size_t *nfields);

/* The line on which the record last returned began. */
size_t scim_csv_row_line(const scim_csv *p);

/* The encoding detected from a byte-order mark ("UTF-16LE", ...), "UTF-8"
** when none was given and none detected, NULL when one was given (or before
** the first bytes are seen). Static. */
const char *scim_csv_encoding(const scim_csv *p);

/* The delimiter in use (detected or given); 0 until it is known. */
char scim_csv_delimiter(const scim_csv *p);

/* The sticky error's status and position (status 0 when none). */
const scim_csv_error_info *scim_csv_error(const scim_csv *p);

/* A static English description of a status code. */
const char *scim_csv_strerror(int status);

#endif
