/*
** csv_test.c - the C tokenizer alone (no Lua), libcsv test style: each case
** pairs input bytes with the expected records, and every case is re-fed
** whole, in 1-byte blocks, and split in two at every position (so a CR LF
** pair, a doubled quote or a BOM is cut across blocks everywhere). A
** randomized round trip then encodes random records (quotes, delimiters,
** CR/LF, UTF-8, fields longer than the 16-byte scan width) and parses them
** back at random block splits.
**
** Records are rendered as "<line>[field][field]\n" with \\, \[, \], \r, \n
** escaped and a quoted field marked by a leading '"' inside its brackets;
** an error ends the output with "!<status>@<line>:<column>".
**
** Everything runs once per scanner (opts.simd 0, 1, 2: AVX2 where the CPU
** has it, SSE2, portable), which must all give the same output.
**
** The last line is "csv_test: N passed, M failed", counting tests (a case
** on one scanner passes when every feed of it does); the exit status is 1
** when M > 0.
*/
#include "csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int simd_level;   /* opts.simd of every parser */

typedef struct tcase {
  const char *name;
  const char *in;
  size_t len;
  char delim;         /* 0: detect */
  int lenient, utf8;
  size_t fields, max_field;
  const char *want;
  size_t max_row, max_fields;   /* 0: defaults */
} tcase;

#define IN(s) s, sizeof(s) - 1
#define FIRST SCIM_CSV_FIELDS_FIRST

static const tcase cases[] = {
  { "simple LF", IN("a,b\nc,d\n"), 0, 0, 1, 0, 0, "1[a][b]\n2[c][d]\n", 0, 0 },
  { "last record without line break", IN("a,b\nc,d"), 0, 0, 1, 0, 0,
    "1[a][b]\n2[c][d]\n", 0, 0 },
  { "CRLF", IN("a,b\r\nc,d\r\n"), 0, 0, 1, 0, 0, "1[a][b]\n2[c][d]\n", 0, 0 },
  { "CR only", IN("a,b\rc,d\r"), 0, 0, 1, 0, 0, "1[a][b]\n2[c][d]\n", 0, 0 },
  { "mixed line ends", IN("a\rb\r\nc\nd\r\n\re"), ',', 0, 1, 0, 0,
    "1[a]\n2[b]\n3[c]\n4[d]\n6[e]\n", 0, 0 },
  { "empty fields", IN(",a,,\n,,,\n"), 0, 0, 1, 0, 0,
    "1[][a][][]\n2[][][][]\n", 0, 0 },
  { "quoted fields", IN("\"a\",\"b,c\",\"\"\n"), 0, 0, 1, 0, 0,
    "1[\"a][\"b,c][\"]\n", 0, 0 },
  { "doubled quotes", IN("\"say \"\"hi\"\"\",\"\"\"\"\n"), 0, 0, 1, 0, 0,
    "1[\"say \"hi\"][\"\"]\n", 0, 0 },
  { "line breaks inside quotes", IN("\"a\nb\",\"c\r\nd\",\"e\rf\"\nx,y,z\n"), 0, 0,
    1, 0, 0, "1[\"a\\nb][\"c\\r\\nd][\"e\\rf]\n5[x][y][z]\n", 0, 0 },
  { "quoted last field at EOF", IN("a,\"b\"\"\""), 0, 0, 1, 0, 0, "1[a][\"b\"]\n", 0, 0 },
  { "blank lines skipped", IN("\n\na\n\r\n\rb\n\n"), ',', 0, 1, 0, 0,
    "3[a]\n6[b]\n", 0, 0 },
  { "quoted empty line is a record", IN("a\n\"\"\nb"), ',', 0, 1, 0, 0,
    "1[a]\n2[\"]\n3[b]\n", 0, 0 },
  { "BOM skipped", IN("\xEF\xBB\xBF" "id,name\n1,x\n"), 0, 0, 1, 0, 0,
    "1[id][name]\n2[1][x]\n", 0, 0 },
  { "BOM only", IN("\xEF\xBB\xBF"), 0, 0, 1, 0, 0, "", 0, 0 },
  { "partial BOM is data", IN("\xEF\xBB" "a\n"), 0, 0, 0, 0, 0, "1[\xEF\xBB" "a]\n", 0, 0 },
  { "empty input", IN(""), 0, 0, 1, 0, 0, "", 0, 0 },
  { "detect semicolon", IN("a;b,c;d\n1;2,3;4\n"), 0, 0, 1, 0, 0,
    "1[a][b,c][d]\n2[1][2,3][4]\n", 0, 0 },
  { "detect tab", IN("a\tb\tc\n1\t2\t3"), 0, 0, 1, 0, 0, "1[a][b][c]\n2[1][2][3]\n", 0, 0 },
  { "detect pipe", IN("a|b\n1|2"), 0, 0, 1, 0, 0, "1[a][b]\n2[1][2]\n", 0, 0 },
  { "detect ignores quoted", IN("\"a;b;c\",d\n"), 0, 0, 1, 0, 0, "1[\"a;b;c][d]\n", 0, 0 },
  { "detect default comma", IN("abc\n1\n"), 0, 0, 1, 0, 0, "1[abc]\n2[1]\n", 0, 0 },
  { "given delimiter", IN("a;b,c\n"), ',', 0, 1, 0, 0, "1[a;b][c]\n", 0, 0 },
  { "UTF-8 accepted", IN("Zo\xC3\xAB,\xE7\x8E\x8B,\xF0\x9F\x98\x80\n"), 0, 0, 1, 0, 0,
    "1[Zo\xC3\xAB][\xE7\x8E\x8B][\xF0\x9F\x98\x80]\n", 0, 0 },
  { "long fields (SIMD path)",
    IN("abcdefghijklmnopqrstuvwxyz0123456789,\"ABCDEFGHIJ\"\"KLMNOPQRSTUV,WXYZ\"\r\n"
       "0123456789abcdefghij0123456789,x\r\n"), 0, 0, 1, 0, 0,
    "1[abcdefghijklmnopqrstuvwxyz0123456789][\"ABCDEFGHIJ\"KLMNOPQRSTUV,WXYZ]\n"
    "2[0123456789abcdefghij0123456789][x]\n", 0, 0 },
  { "CR LF across the 64-byte scan block",
    IN("a,b\r\n0123456789012345678901234567890123456789012345678901234,cdefg\r\n"
       "\"0123456789012345678901234567890123456789012345678901234567\r\nx\",y\r\nz,w"),
    0, 0, 1, FIRST, 0,
    "1[a][b]\n2[0123456789012345678901234567890123456789012345678901234][cdefg]\n"
    "3[\"0123456789012345678901234567890123456789012345678901234567\\r\\nx][y]\n5[z][w]\n", 0, 0 },
  { "many fields (arrays grow)",
    IN("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,"
       "31,32,33,34,35,36,37,38,39,40\n"), 0, 0, 1, 0, 0,
    "1[1][2][3][4][5][6][7][8][9][10][11][12][13][14][15][16][17][18][19][20][21][22][23]"
    "[24][25][26][27][28][29][30][31][32][33][34][35][36][37][38][39][40]\n", 0, 0 },
  /* many short records in one 64-byte block: a record returned mid-block
  ** leaves the rest of the block's bits for the next one */
  { "short records share a block",
    IN("a,b\r\nc,d\n\n\r\ne,\"f\"\"\"\r\"g\nh\",i\r\n,\n\"\"\nj,k\r"
       "lmnopqrstuvwxyz0123456789abcdefghij,\"x,y\"\n1,2\n"), ',', 0, 1, 0, 0,
    "1[a][b]\n2[c][d]\n5[e][\"f\"]\n6[\"g\\nh][i]\n8[][]\n9[\"]\n10[j][k]\n"
    "11[lmnopqrstuvwxyz0123456789abcdefghij][\"x,y]\n12[1][2]\n", 0, 0 },
  { "error after records in the same block",
    IN("a,b\nc,d\ne,f\"g\nh,i\n0123456789012345678901234567890123456789012345\n"),
    ',', 0, 1, 0, 0, "1[a][b]\n2[c][d]\n!EQUOTE@3:4", 0, 0 },
  /* errors */
  { "too many fields for max_fields", IN("a,b\n1,2,3,4\n"), 0, 0, 1, 0, 0,
    "1[a][b]\n!ETOOMANY@2:7", 0, 3 },
  { "record over max_row", IN("ab,cd\n\"x\ny\",abcd\nz\n"), 0, 0, 1, 0, 0,
    "1[ab][cd]\n!EROWSIZE@2:1", 8, 0 },
  { "header line over max_row during detection", IN("abcdefghij\nx\n"), 0, 0, 1, 0, 0,
    "!EROWSIZE@1:1", 8, 0 },
  { "quote in unquoted field", IN("a,b\nc,d\"e\n"), 0, 0, 1, 0, 0,
    "1[a][b]\n!EQUOTE@2:4", 0, 0 },
  { "quote in unquoted field, lenient", IN("a,b\"c\"\n"), 0, 1, 1, 0, 0,
    "1[a][b\"c\"]\n", 0, 0 },
  { "text after closing quote", IN("\"ab\"c,d\n"), 0, 0, 1, 0, 0,
    "!EAFTERQUOTE@1:5", 0, 0 },
  { "text after closing quote, lenient", IN("\"a\"\"b\"c\"d,e\n"), 0, 1, 1, 0, 0,
    "1[\"a\"bc\"d][e]\n", 0, 0 },
  { "text after closing quote at EOF", IN("\"ab\"c"), 0, 0, 1, 0, 0,
    "!EAFTERQUOTE@1:5", 0, 0 },
  { "unterminated quote names its line", IN("a,b\n1,\"x\ny\nz\n"), 0, 0, 1, 0, 0,
    "1[a][b]\n!EUNTERMINATED@2:3", 0, 0 },
  { "too many fields", IN("a,b\n1,2,3\n"), 0, 0, 1, FIRST, 0,
    "1[a][b]\n!EFIELDCOUNT@2:5 3/2", 0, 0 },
  { "too few fields", IN("a,b,c\n1,2\n"), 0, 0, 1, FIRST, 0,
    "1[a][b][c]\n!EFIELDCOUNT@2:4 2/3", 0, 0 },
  { "field count after multi-line field", IN("a,b\n\"x\ny\",2,\"3\"\n"), 0, 0, 1,
    FIRST, 0, "1[a][b]\n!EFIELDCOUNT@3:6 3/2", 0, 0 },
  { "invalid UTF-8", IN("a,b\n\xC3\xA9t\xC3\xA9,\xC3(x\n"), 0, 0, 1, 0, 0,
    "1[a][b]\n!EUTF8@2:5", 0, 0 },
  { "invalid UTF-8 on a later line of a record", IN("\"a\n\xE2\x82\xAC\xFF\"\n"), 0,
    0, 1, 0, 0, "!EUTF8@2:2", 0, 0 },
  { "overlong UTF-8", IN("\xC0\xAF\n"), 0, 0, 1, 0, 0, "!EUTF8@1:1", 0, 0 },
  { "surrogate UTF-8", IN("\xED\xA0\x80\n"), 0, 0, 1, 0, 0, "!EUTF8@1:1", 0, 0 },
  { "invalid UTF-8 accepted", IN("\xFF,\xC3\n"), 0, 0, 0, 0, 0, "1[\xFF][\xC3]\n", 0, 0 },
  { "field too large", IN("ab,cde\nabcdef,x\n"), 0, 0, 1, 0, 4,
    "1[ab][cde]\n!EFIELDSIZE@2:1", 0, 0 },
  { "quoted field at the limit", IN("\"a\"\"\"\"b\",\"abcde\"\n"), 0, 0, 1, 0, 4,
    "!EFIELDSIZE@1:10", 0, 0 },
  { "column counts characters", IN("\xC3\xA9\xC3\xA9,\xE2\x82\xAC\"\n"), 0, 0, 1, 0, 0,
    "!EQUOTE@1:5", 0, 0 },
  /* control characters (allow_control 0, the default) */
  { "NUL in a value", IN("a,b\nc,d\0e\n"), 0, 0, 1, 0, 0,
    "1[a][b]\n!ECONTROL@2:4 0x00", 0, 0 },
  { "escape in a quoted value on a later line", IN("a,b\n1,\"x\ny\x1B[31m\"\n"), 0, 0, 1,
    0, 0, "1[a][b]\n!ECONTROL@3:2 0x1b", 0, 0 },
  { "control character in the header", IN("id,na\x01me\n1,2\n"), 0, 0, 1, 0, 0,
    "!ECONTROL@1:6 0x01", 0, 0 },
  { "control character past a 64-byte block, records before it",
    IN("a,b\n0123456789012345678901234567890123456789012345678901234567890123,x\n"
       "c,0123456789012345678901234567890123456789012345678901234567890123\x7F\x1F\n"),
    ',', 0, 1, 0, 0,
    "1[a][b]\n2[0123456789012345678901234567890123456789012345678901234567890123][x]\n"
    "!ECONTROL@3:68 0x1f", 0, 0 },
  { "tab, CR and LF are not control errors", IN("a\tb,\"c\r\nd\"\r\n\te\t,f\n"), ',', 0,
    1, 0, 0, "1[a\tb][\"c\\r\\nd]\n3[\te\t][f]\n", 0, 0 },
  { "a control delimiter is no value", IN("a\x1F" "b\n1\x1F" "2\n"), '\x1F', 0, 1, 0, 0,
    "1[a][b]\n2[1][2]\n", 0, 0 },
};

/* Encodings: each case as the others (whole, 1-byte blocks, every split,
** so every multi-byte sequence and byte-order mark is cut everywhere). */
typedef struct ecase {
  const char *name;
  const char *in;
  size_t len;
  const char *encoding;   /* NULL: detect from a byte-order mark */
  int utf8;
  const char *want;       /* EENCODING adds " +<offset>" and "!" if incomplete */
} ecase;

static const ecase enc_cases[] = {
  { "Windows-1252", IN("Name,City\nM\xFCller,K\xF6ln\n\x80 5,\x93q\x94\n"), "cp1252", 1,
    "1[Name][City]\n2[M\xC3\xBCller][K\xC3\xB6ln]\n3[\xE2\x82\xAC 5][\xE2\x80\x9Cq\xE2\x80\x9D]\n" },
  { "Latin-1", IN("\xE9t\xE9,\xFF\n"), "latin1", 1, "1[\xC3\xA9t\xC3\xA9][\xC3\xBF]\n" },
  { "UTF-16LE with BOM, detected",
    IN("\xFF\xFE" "a\x00,\x00" "b\x00\r\x00\n\x00\"\x00Z\x00o\x00\xEB\x00\n\x00=\xD8\x00\xDE\"\x00,"
       "\x00\x8Bs\n\x00"), NULL, 1,
    "1[a][b]\n2[\"Zo\xC3\xAB\\n\xF0\x9F\x98\x80][\xE7\x8E\x8B]\n" },
  { "UTF-16BE with BOM, detected",
    IN("\xFE\xFF\x00" "a\x00,\x00" "b\x00\r\x00\n\x00\"\x00Z\x00o\x00\xEB\x00\n\xD8=\xDE\x00\x00\"\x00,"
       "s\x8B\x00\n"), NULL, 1,
    "1[a][b]\n2[\"Zo\xC3\xAB\\n\xF0\x9F\x98\x80][\xE7\x8E\x8B]\n" },
  { "UTF-16BE given, no BOM",
    IN("\x00" "a\x00,\x00" "b\x00\r\x00\n\x00\"\x00Z\x00o\x00\xEB\x00\n\xD8=\xDE\x00\x00\"\x00,"
       "s\x8B\x00\n"), "UTF-16BE", 1,
    "1[a][b]\n2[\"Zo\xC3\xAB\\n\xF0\x9F\x98\x80][\xE7\x8E\x8B]\n" },
  { "UTF-16 given, BOM read by iconv", IN("\xFF\xFE" "a\x00,\x00" "b\x00"), "utf-16", 1,
    "1[a][b]\n" },
  { "UTF-16LE given with its BOM", IN("\xFF\xFE" "a\x00,\x00" "b\x00"), "UTF-16LE", 1,
    "1[a][b]\n" },
  { "UTF-32LE with BOM, detected",
    IN("\xFF\xFE\x00\x00" "a\x00\x00\x00,\x00\x00\x00\xE9\x00\x00\x00\n\x00\x00\x00"), NULL, 1,
    "1[a][\xC3\xA9]\n" },
  { "UTF-32BE with BOM, detected", IN("\x00\x00\xFE\xFF\x00\x00\x00" "a"), NULL, 1, "1[a]\n" },
  { "UTF-16LE BOM alone", IN("\xFF\xFE"), NULL, 1, "" },
  { "invalid in Windows-1252", IN("a,b\nx,y\x81z\n"), "cp1252", 1,
    "1[a][b]\n!EENCODING@2:4 +7" },
  { "lone surrogate in UTF-16LE", IN("\xFF\xFE" "a\x00\n\x00" "b\x00\x00\xD8" "c\x00\n\x00"), NULL, 1,
    "1[a]\n!EENCODING@2:2 +8" },
  { "UTF-16LE cut inside a character", IN("\xFF\xFE" "a\x00\n\x00" "b\x00" "c"), NULL, 1,
    "1[a]\n!EENCODING@2:2 +8!" },
  { "UTF-16 BOM with UTF-8 given", IN("\xFF\xFE" "a\x00"), "UTF-8", 1, "!EBOM@1:1 UTF-16LE" },
  { "UTF-16 BOM is data with UTF-8 given and no check", IN("\xFF\xFE" "a,b\n"), "utf8", 0,
    "1[\xFF\xFE" "a][b]\n" },
  { "UTF-8 BOM with cp1252 given", IN("\xEF\xBB\xBF" "a\n"), "cp1252", 1, "!EBOM@1:1 UTF-8" },
  { "UTF-32LE BOM with latin1 given", IN("\xFF\xFE\x00\x00"), "latin1", 1,
    "!EBOM@1:1 UTF-32LE" },
  { "control character after conversion", IN("a,b\x00\n"), "cp1252", 1,
    "!ECONTROL@1:4 0x00" },
};

static const char *test_encoding;  /* opts.encoding of every parser */

static int passed, failed;

static const char *status_name(int st) {
  switch (st) {
    case SCIM_CSV_ENOMEM: return "ENOMEM";
    case SCIM_CSV_EQUOTE: return "EQUOTE";
    case SCIM_CSV_EAFTERQUOTE: return "EAFTERQUOTE";
    case SCIM_CSV_EUNTERMINATED: return "EUNTERMINATED";
    case SCIM_CSV_EFIELDSIZE: return "EFIELDSIZE";
    case SCIM_CSV_EROWSIZE: return "EROWSIZE";
    case SCIM_CSV_ETOOMANY: return "ETOOMANY";
    case SCIM_CSV_EFIELDCOUNT: return "EFIELDCOUNT";
    case SCIM_CSV_EUTF8: return "EUTF8";
    case SCIM_CSV_EMISUSE: return "EMISUSE";
    case SCIM_CSV_ECONTROL: return "ECONTROL";
    case SCIM_CSV_EBOM: return "EBOM";
    case SCIM_CSV_EENCODING: return "EENCODING";
    default: return "?";
  }
}

/* A growable output string. */
typedef struct out { char *s; size_t n, cap; } out;

static void put(out *o, const char *s, size_t n) {
  if (o->n + n + 1 > o->cap) {
    o->cap = (o->n + n + 1) * 2;
    o->s = (char *)realloc(o->s, o->cap);
    if (!o->s) { perror("realloc"); exit(2); }
  }
  memcpy(o->s + o->n, s, n);
  o->n += n;
  o->s[o->n] = '\0';
}

static void puts_(out *o, const char *s) { put(o, s, strlen(s)); }

static void render_row(out *o, scim_csv *p) {
  size_t n, i, j;
  const scim_csv_field *f = scim_csv_row(p, &n);
  char num[32];
  sprintf(num, "%lu", (unsigned long)scim_csv_row_line(p));
  puts_(o, num);
  for (i = 0; i < n; i++) {
    put(o, "[", 1);
    if (f[i].quoted) put(o, "\"", 1);
    for (j = 0; j < f[i].len; j++) {
      char c = f[i].data[j];
      if (c == '\\' || c == '[' || c == ']') { put(o, "\\", 1); put(o, &c, 1); }
      else if (c == '\r') put(o, "\\r", 2);
      else if (c == '\n') put(o, "\\n", 2);
      else put(o, &c, 1);
    }
    put(o, "]", 1);
  }
  put(o, "\n", 1);
}

/* Drains rows; 1 while more input is wanted, 0 when finished. */
static int drain(scim_csv *p, out *o) {
  for (;;) {
    int st = scim_csv_next_row(p);
    if (st == SCIM_CSV_ROW) { render_row(o, p); continue; }
    if (st == SCIM_CSV_NEED_MORE) return 1;
    if (st < 0) {
      const scim_csv_error_info *e = scim_csv_error(p);
      char buf[128];
      sprintf(buf, "!%s@%lu:%lu", status_name(st), (unsigned long)e->line,
              (unsigned long)e->column);
      puts_(o, buf);
      if (st == SCIM_CSV_EFIELDCOUNT) {
        sprintf(buf, " %lu/%lu", (unsigned long)e->fields, (unsigned long)e->expected);
        puts_(o, buf);
      } else if (st == SCIM_CSV_ECONTROL) {
        sprintf(buf, " 0x%02x", e->byte);
        puts_(o, buf);
      } else if (st == SCIM_CSV_EBOM) {
        puts_(o, " ");
        puts_(o, e->bom);
      } else if (st == SCIM_CSV_EENCODING) {
        sprintf(buf, " +%lu%s", (unsigned long)e->offset, e->incomplete ? "!" : "");
        puts_(o, buf);
      }
    }
    return 0;
  }
}

/*
** Parses `in` fed in blocks ending at the offsets cuts[0..ncuts) (then the
** rest), or in blocks of `step` bytes through reserve/commit when step > 0.
*/
static char *parse(const tcase *c, const char *in, size_t len, const size_t *cuts,
                   size_t ncuts, size_t step) {
  scim_csv_opts opts;
  scim_csv *p;
  out o = { NULL, 0, 0 };
  size_t at = 0, k = 0;
  int more = 1;
  memset(&opts, 0, sizeof opts);
  opts.delimiter = c->delim;
  opts.lenient = c->lenient;
  opts.check_utf8 = c->utf8;
  opts.fields = c->fields;
  opts.max_field = c->max_field;
  opts.max_row = c->max_row;
  opts.max_fields = c->max_fields;
  opts.simd = simd_level;
  opts.encoding = test_encoding;
  p = scim_csv_new(&opts);
  if (!p) { fprintf(stderr, "scim_csv_new failed\n"); exit(2); }
  puts_(&o, "");
  while (more && at < len) {
    size_t next;
    if (step) {
      size_t avail;
      char *dst;
      next = at + step < len ? at + step : len;
      dst = scim_csv_reserve(p, next - at, &avail);
      if (!dst) { more = drain(p, &o); break; }
      memcpy(dst, in + at, next - at);
      scim_csv_commit(p, next - at);
    } else {
      next = k < ncuts ? cuts[k++] : len;
      if (scim_csv_feed(p, in + at, next - at) < 0) { more = drain(p, &o); break; }
    }
    at = next;
    more = drain(p, &o);
  }
  if (more) {
    scim_csv_finish(p);
    drain(p, &o);
  }
  scim_csv_free(p);
  return o.s;
}

/*
** A test is one case on one scanner (every feed of it), or all the random
** round trips on one scanner, or one API check: inside begin/end_test the
** checks only mark the test failed, so the counts are tests, not feeds.
*/
static int in_test, test_failed;

static void begin_test(void) { in_test = 1; test_failed = 0; }

static void end_test(void) {
  in_test = 0;
  if (test_failed) failed++; else passed++;
}

static void check(const char *what, const char *how, const char *got, const char *want) {
  if (strcmp(got, want) == 0) { if (!in_test) passed++; return; }
  if (in_test) test_failed = 1; else failed++;
  printf("FAIL %s (%s, simd %d)\n  want: %s\n  got:  %s\n", what, how, simd_level,
         want, got);
}

static void run_case(const tcase *c) {
  char *got, how[64];
  size_t k;
  got = parse(c, c->in, c->len, NULL, 0, 0);
  check(c->name, "whole", got, c->want);
  free(got);
  got = parse(c, c->in, c->len, NULL, 0, 1);
  check(c->name, "1-byte blocks", got, c->want);
  free(got);
  for (k = 1; k < c->len; k++) {
    got = parse(c, c->in, c->len, &k, 1, 0);
    sprintf(how, "split at %lu", (unsigned long)k);
    check(c->name, how, got, c->want);
    free(got);
  }
}

/* {====================================================== random round trip */

static unsigned long rng = 12345;
static unsigned rnd(unsigned n) {
  rng = rng * 6364136223846793005UL + 1442695040888963407UL;
  return (unsigned)((rng >> 33) % n);
}

static void random_field(out *raw) {
  static const char *const pieces[] = {
    "a", "Z", "0", " ", ",", ";", "\"", "\r", "\n", "\r\n", "\xC3\xA9",
    "\xE7\x8E\x8B", "\xF0\x9F\x98\x80", "\t", "|", "x@example.com"
  };
  unsigned n = rnd(4) == 0 ? rnd(60) : rnd(8), i;
  for (i = 0; i < n; i++) puts_(raw, pieces[rnd(16)]);
}

/* Writes one field RFC 4180 style (quoted when needed) to `doc`. */
static void encode(out *doc, const char *s, size_t n, int only) {
  size_t i;
  int q = n == 0 ? only : 0;
  for (i = 0; i < n; i++)
    if (s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n') q = 1;
  if (!q && rnd(8) == 0) q = 1;
  if (q) put(doc, "\"", 1);
  for (i = 0; i < n; i++) {
    if (s[i] == '"') put(doc, "\"", 1);
    put(doc, s + i, 1);
  }
  if (q) put(doc, "\"", 1);
}

static void random_round_trip(int iter) {
  static const char *const ends[] = { "\n", "\r\n", "\r" };
  out doc = { NULL, 0, 0 }, want = { NULL, 0, 0 };
  unsigned rows = 1 + rnd(6), cols = 1 + rnd(5), r, col;
  size_t line = 1, cuts[3];
  tcase c;
  char *got, how[64];
  int t;
  puts_(&doc, "");
  puts_(&want, "");
  for (r = 0; r < rows; r++) {
    char num[32];
    sprintf(num, "%lu", (unsigned long)line);
    puts_(&want, num);
    for (col = 0; col < cols; col++) {
      out f = { NULL, 0, 0 };
      size_t j;
      int quoted;
      size_t before;
      puts_(&f, "");
      random_field(&f);
      if (col) put(&doc, ",", 1);
      before = doc.n;
      encode(&doc, f.s, f.n, cols == 1);
      quoted = doc.n > before && doc.s[before] == '"';
      put(&want, "[", 1);
      if (quoted) put(&want, "\"", 1);
      for (j = 0; j < f.n; j++) {
        char ch = f.s[j];
        if (ch == '\\' || ch == '[' || ch == ']') { put(&want, "\\", 1); put(&want, &ch, 1); }
        else if (ch == '\r') put(&want, "\\r", 2);
        else if (ch == '\n') put(&want, "\\n", 2);
        else put(&want, &ch, 1);
        if (ch == '\r' && !(j + 1 < f.n && f.s[j + 1] == '\n')) line++;
        else if (ch == '\n') line++;
      }
      put(&want, "]", 1);
      free(f.s);
    }
    put(&want, "\n", 1);
    if (r + 1 < rows || rnd(2)) puts_(&doc, ends[rnd(3)]);
    line++;
  }
  memset(&c, 0, sizeof c);
  c.name = "random round trip";
  c.delim = ',';
  c.utf8 = 1;
  c.fields = FIRST;
  for (t = 0; t < 4; t++) {
    size_t nc = 0;
    if (t == 1) got = parse(&c, doc.s, doc.n, NULL, 0, 1);
    else {
      if (t > 1 && doc.n > 1) {
        unsigned k;
        for (k = 0; k < (unsigned)t; k++) cuts[nc++] = 1 + rnd((unsigned)doc.n - 1);
        if (nc == 3 && cuts[0] > cuts[1]) { size_t x = cuts[0]; cuts[0] = cuts[1]; cuts[1] = x; }
        if (nc == 3 && cuts[1] > cuts[2]) { size_t x = cuts[1]; cuts[1] = cuts[2]; cuts[2] = x; }
        if (nc == 3 && cuts[0] > cuts[1]) { size_t x = cuts[0]; cuts[0] = cuts[1]; cuts[1] = x; }
        if (nc == 2 && cuts[0] > cuts[1]) { size_t x = cuts[0]; cuts[0] = cuts[1]; cuts[1] = x; }
      }
      got = parse(&c, doc.s, doc.n, cuts, nc, 0);
    }
    sprintf(how, "iteration %d, feeding %d", iter, t);
    check(c.name, how, got, want.s);
    free(got);
  }
  free(doc.s);
  free(want.s);
}

/* }====================================================== */

/* Options are checked and the allocator is the one given. */
static size_t live_bytes;
static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  live_bytes -= ptr ? osize : 0;
  if (nsize == 0) { free(ptr); return NULL; }
  ptr = realloc(ptr, nsize);
  if (ptr) live_bytes += nsize;
  return ptr;
}

static void api_checks(void) {
  scim_csv_opts o;
  scim_csv *p;
  int st;
  memset(&o, 0, sizeof o);
  o.delimiter = '"';
  check("quote delimiter rejected", "api", scim_csv_new(&o) ? "made" : "NULL", "NULL");
  o.delimiter = 0;
  o.simd = 3;
  check("bad simd rejected", "api", scim_csv_new(&o) ? "made" : "NULL", "NULL");
  o.simd = 0;
  o.alloc = counting_alloc;
  p = scim_csv_new(&o);
  scim_csv_feed(p, "a;b\n", 4);
  st = scim_csv_next_row(p);
  check("detected delimiter", "api", scim_csv_delimiter(p) == ';' && st == SCIM_CSV_ROW
        ? "ok" : "bad", "ok");
  scim_csv_finish(p);
  st = scim_csv_next_row(p);
  check("end", "api", st == SCIM_CSV_END ? "ok" : "bad", "ok");
  check("feed after finish", "api",
        scim_csv_feed(p, "x", 1) == SCIM_CSV_EMISUSE ? "ok" : "bad", "ok");
  check("allocator used", "api", live_bytes > 0 ? "ok" : "bad", "ok");
  scim_csv_free(p);
  check("allocator balanced", "api", live_bytes == 0 ? "ok" : "bad", "ok");
  check("strerror", "api", scim_csv_strerror(SCIM_CSV_EQUOTE),
        "quote inside unquoted field");
  o.encoding = "no-such-encoding";
  check("unknown encoding rejected", "api", scim_csv_new(&o) ? "made" : "NULL", "NULL");
  check("unknown encoding", "api", scim_csv_encoding_known("no-such-encoding") ? "known"
        : "unknown", "unknown");
  check("known encodings", "api", scim_csv_encoding_known("cp1252") &&
        scim_csv_encoding_known("UTF-16") && scim_csv_encoding_known("utf-8") &&
        scim_csv_encoding_known(NULL) ? "known" : "unknown", "known");
  o.encoding = NULL;
  /* The buffer moves while a record's CR LF pair is cut after the CR (the
  ** scanner keeps bits of the CR's block across records): the rows after it
  ** must come from the moved bytes. */
  for (simd_level = 0; simd_level <= 2; simd_level++) {
    char big[6000];
    size_t n = 0, rows = 0, nf;
    int ok = 1;
    const scim_csv_field *f;
    memset(&o, 0, sizeof o);
    o.delimiter = ',';
    o.simd = simd_level;
    p = scim_csv_new(&o);
    scim_csv_feed(p, "a,b\r", 4);
    ok &= scim_csv_next_row(p) == SCIM_CSV_ROW;
    ok &= scim_csv_next_row(p) == SCIM_CSV_NEED_MORE;
    memcpy(big, "\nc,d\n", 5);
    for (n = 5; n + 8 <= sizeof big; n += 8) memcpy(big + n, "xy,z,1\r\n", 8);
    scim_csv_feed(p, big, n);   /* more than the room left: the buffer moves */
    scim_csv_finish(p);
    while ((st = scim_csv_next_row(p)) == SCIM_CSV_ROW) {
      f = scim_csv_row(p, &nf);
      if (rows == 0) ok &= nf == 2 && f[0].len == 1 && f[0].data[0] == 'c';
      else ok &= nf == 3 && f[0].len == 2 && memcmp(f[0].data, "xy", 2) == 0;
      rows++;
    }
    ok &= st == SCIM_CSV_END && rows == 1 + (n - 5) / 8;
    check("buffer moves after a cut CR LF", "api", ok ? "ok" : "bad", "ok");
    scim_csv_free(p);
  }
  /* allow_control: control characters are data */
  for (simd_level = 0; simd_level <= 2; simd_level++) {
    size_t nf;
    const scim_csv_field *f;
    int ok;
    memset(&o, 0, sizeof o);
    o.allow_control = 1;
    o.simd = simd_level;
    p = scim_csv_new(&o);
    scim_csv_feed(p, "a\0,\x1B\n", 5);
    scim_csv_finish(p);
    ok = scim_csv_next_row(p) == SCIM_CSV_ROW;
    f = scim_csv_row(p, &nf);
    ok &= nf == 2 && f[0].len == 2 && f[0].data[1] == '\0' && f[1].len == 1 &&
          f[1].data[0] == '\x1B' && scim_csv_next_row(p) == SCIM_CSV_END;
    check("allow_control", "api", ok ? "ok" : "bad", "ok");
    scim_csv_free(p);
  }
  simd_level = 0;
}

int main(void) {
  size_t i;
  int it;
  for (simd_level = 0; simd_level <= 2; simd_level++) {
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      begin_test();
      run_case(&cases[i]);
      end_test();
    }
    begin_test();
    for (it = 0; it < 3000; it++) random_round_trip(it);
    end_test();
    for (i = 0; i < sizeof enc_cases / sizeof enc_cases[0]; i++) {
      const ecase *e = &enc_cases[i];
      tcase c;
      memset(&c, 0, sizeof c);
      c.name = e->name;
      c.in = e->in;
      c.len = e->len;
      c.utf8 = e->utf8;
      c.want = e->want;
      test_encoding = e->encoding;
      begin_test();
      run_case(&c);
      end_test();
      test_encoding = NULL;
    }
  }
  simd_level = 0;
  api_checks();
  printf("csv_test: %d passed, %d failed\n", passed, failed);
  return failed > 0;
}
