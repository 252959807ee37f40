/* checkpoint/safetensors.c: a written file reads back byte for byte (every dtype, scalars, empty
 * tensors, escaped names, metadata), the header is the exact JSON the format expects, and every kind
 * of malformed header or file is refused with a message naming the problem; random corruption of a
 * valid header never crashes the parser and anything it accepts still tiles the data section. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/safetensors.h"
#include "tests/unit/test_util.h"

static char g_dir[256];

static void path_in(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", g_dir, name);
}

static long file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static dtr_result parse(const char *json, uint64_t data_bytes, char *err, size_t cap, dtr__sft_tensor **t,
                        int *n) {
  dtr__sft_meta *m = NULL;
  int nm = 0;
  dtr__sft_tensor *tt = NULL;
  int nn = 0;
  dtr_result rc = dtr__sft_parse_header(json, strlen(json), data_bytes, "hdr", &tt, &nn, &m, &nm, err, cap);
  if (rc == DTR_OK) {
    if (t) {
      *t = tt;
      *n = nn;
      tt = NULL;
      nn = 0;
    }
    dtr__sft_free_parsed(tt, nn, m, nm);
  }
  return rc;
}

static void test_roundtrip(void) {
  char path[512];
  path_in(path, sizeof path, "rt.safetensors");
  float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.5f, 1e30f};
  uint16_t bf16[4] = {0x3f80, 0xc000, 0x0000, 0x7f80};
  uint16_t f16[1] = {0x3c00};
  double f64[3] = {1.0 / 3.0, -7.0, 1e-300};
  int32_t i32[2] = {-1, 2147483647};
  int64_t i64[2] = {INT64_MIN, 42};
  uint8_t u8[5] = {0, 1, 127, 128, 255};
  dtr__sft_tensor t[] = {
      {.name = "a.f32", .dtype = DTR_F32, .ndim = 2, .shape = {2, 3}},
      {.name = "b \"quoted\"\n/x", .dtype = DTR_BF16, .ndim = 1, .shape = {4}},
      {.name = "scalar", .dtype = DTR_F16, .ndim = 0},
      {.name = "empty", .dtype = DTR_F32, .ndim = 2, .shape = {0, 5}},
      {.name = "f64", .dtype = DTR_F64, .ndim = 3, .shape = {1, 3, 1}},
      {.name = "i32", .dtype = DTR_I32, .ndim = 1, .shape = {2}},
      {.name = "i64", .dtype = DTR_I64, .ndim = 1, .shape = {2}},
      {.name = "caf\xc3\xa9", .dtype = DTR_U8, .ndim = 1, .shape = {5}},
  };
  const void *data[] = {f32, bf16, f16, NULL, f64, i32, i64, u8};
  size_t sizes[] = {sizeof f32, sizeof bf16, sizeof f16, 0, sizeof f64, sizeof i32, sizeof i64, sizeof u8};
  dtr__sft_meta meta[] = {{"format", "pt"}, {"note", "tab\there \"q\""}};
  char err[512] = "";
  dtr__sft_writer *w = NULL;
  CHECK_EQ_INT(dtr__sft_writer_create(path, t, 8, meta, 2, &w, err, sizeof err), DTR_OK);
  for (int i = 0; i < 8 && w; i++) {
    /* in two pieces, to exercise appending across calls */
    size_t h = sizes[i] / 2;
    if (h) CHECK_EQ_INT(dtr__sft_writer_append(w, data[i], h, err, sizeof err), DTR_OK);
    CHECK_EQ_INT(dtr__sft_writer_append(w, (const char *)data[i] + h, sizes[i] - h, err, sizeof err), DTR_OK);
  }
  CHECK(file_size(path) < 0); /* nothing at the final path before finish */
  if (w) CHECK_EQ_INT(dtr__sft_writer_finish(w, err, sizeof err), DTR_OK);
  dtr__sft_writer_destroy(w);

  dtr__sft_file *f = NULL;
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_OK);
  if (!f) {
    fprintf(stderr, "open: %s\n", err);
    return;
  }
  CHECK_EQ_INT(f->data_start % 8, 0);
  CHECK_EQ_INT(f->ntensors, 8);
  size_t total = 0;
  for (int i = 0; i < 8; i++) total += sizes[i];
  CHECK_EQ_INT(f->data_bytes, total);
  for (int i = 0; i < 8 && i < f->ntensors; i++) {
    const dtr__sft_tensor *g = dtr__sft_find(f, t[i].name);
    CHECK(g != NULL);
    if (!g) continue;
    CHECK_EQ_INT(g->dtype, t[i].dtype);
    CHECK_EQ_INT(g->ndim, t[i].ndim);
    for (int d = 0; d < t[i].ndim; d++) CHECK_EQ_INT(g->shape[d], t[i].shape[d]);
    CHECK_EQ_INT(g->end - g->begin, sizes[i]);
    unsigned char buf[64];
    CHECK_EQ_INT(dtr__sft_read(f, (int)(g - f->tensors), buf, err, sizeof err), DTR_OK);
    CHECK(sizes[i] == 0 || memcmp(buf, data[i], sizes[i]) == 0);
  }
  CHECK_EQ_STR(dtr__sft_meta_get(f, "format"), "pt");
  CHECK_EQ_STR(dtr__sft_meta_get(f, "note"), "tab\there \"q\"");
  CHECK(dtr__sft_meta_get(f, "nope") == NULL);
  dtr__sft_close(f);

  /* The exact header bytes of a small file: what Python's json and safetensors readers will see. */
  path_in(path, sizeof path, "small.safetensors");
  dtr__sft_tensor s[] = {{.name = "w", .dtype = DTR_BF16, .ndim = 2, .shape = {1, 2}}};
  uint16_t sv[2] = {0x3f80, 0x4000};
  CHECK_EQ_INT(dtr__sft_writer_create(path, s, 1, NULL, 0, &w, err, sizeof err), DTR_OK);
  if (w) {
    CHECK_EQ_INT(dtr__sft_writer_append(w, sv, 4, err, sizeof err), DTR_OK);
    CHECK_EQ_INT(dtr__sft_writer_finish(w, err, sizeof err), DTR_OK);
  }
  dtr__sft_writer_destroy(w);
  FILE *fp = fopen(path, "rb");
  unsigned char raw[256] = {0};
  size_t got = fp ? fread(raw, 1, sizeof raw, fp) : 0;
  if (fp) fclose(fp);
  const char *want = "{\"w\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[0,4]}}";
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | raw[i];
  CHECK_EQ_INT(hl % 8, 0);
  CHECK(hl >= strlen(want) && hl < strlen(want) + 8);
  CHECK(memcmp(raw + 8, want, strlen(want)) == 0);
  for (uint64_t i = strlen(want); i < hl; i++) CHECK(raw[8 + i] == ' ');
  CHECK_EQ_INT(got, 8 + hl + 4);
  CHECK(memcmp(raw + 8 + hl, sv, 4) == 0);
}

static void test_writer_misuse(void) {
  char path[512], err[512] = "";
  path_in(path, sizeof path, "short.safetensors");
  dtr__sft_tensor s[] = {{.name = "x", .dtype = DTR_F32, .ndim = 1, .shape = {4}}};
  float v[5] = {0};
  dtr__sft_writer *w = NULL;
  CHECK_EQ_INT(dtr__sft_writer_create(path, s, 1, NULL, 0, &w, err, sizeof err), DTR_OK);
  if (!w) return;
  CHECK_EQ_INT(dtr__sft_writer_append(w, v, 20, err, sizeof err), DTR_ERR_INVALID); /* more than declared */
  CHECK_EQ_INT(dtr__sft_writer_append(w, v, 8, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(dtr__sft_writer_finish(w, err, sizeof err), DTR_ERR_INVALID); /* 8 of 16 */
  CHECK(strstr(err, "8 of 16") != NULL);
  dtr__sft_writer_destroy(w);
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CHECK(file_size(path) < 0);
  CHECK(file_size(tmp) < 0); /* the partial file is gone */
  dtr__sft_tensor bad[] = {{.name = "neg", .dtype = DTR_F32, .ndim = 1, .shape = {-1}}};
  CHECK_EQ_INT(dtr__sft_writer_create(path, bad, 1, NULL, 0, &w, err, sizeof err), DTR_ERR_INVALID);
  CHECK(strstr(err, "neg") != NULL);
}

static void test_parse_ok(void) {
  char err[512];
  dtr__sft_tensor *t = NULL;
  int n = 0;
  /* whitespace everywhere, keys in another order, escapes in names, empty metadata */
  const char *h =
      " \n{ \"__metadata__\" : { } , \"caf\\u00e9\\ud83d\\ude00\\n\" : { \"shape\" : [ 2 ] , "
      "\"data_offsets\" : [ 8 , "
      "12 ] , \"dtype\" : \"BF16\" } , \"z\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}   ";
  CHECK_EQ_INT(parse(h, 12, err, sizeof err, &t, &n), DTR_OK);
  CHECK_EQ_INT(n, 2);
  if (n == 2) {
    CHECK_EQ_STR(t[0].name, "caf\xc3\xa9\xf0\x9f\x98\x80\n");
    CHECK_EQ_INT(t[0].dtype, DTR_BF16);
    CHECK_EQ_INT(t[0].begin, 8);
    CHECK_EQ_INT(t[1].ndim, 0);
  }
  dtr__sft_free_parsed(t, n, NULL, 0);
  CHECK_EQ_INT(parse("{}", 0, err, sizeof err, NULL, NULL), DTR_OK);
  /* a zero-size tensor may sit anywhere in the tiling */
  CHECK_EQ_INT(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                     "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[3,3]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,4]}}",
                     4, err, sizeof err, NULL, NULL),
               DTR_OK);
}

typedef struct bad_case {
  const char *json;
  uint64_t data_bytes;
  dtr_result rc;
  const char *needle; /* must appear in the message */
} bad_case;

#define T1(dt, shape, off) "{\"x\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

static void test_parse_bad(void) {
  static const bad_case cases[] = {
      {"", 0, DTR_ERR_PROTOCOL, "header ends"},
      {"[]", 0, DTR_ERR_PROTOCOL, "expected '{'"},
      {"{", 0, DTR_ERR_PROTOCOL, "header ends"},
      {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, DTR_ERR_PROTOCOL, "header ends"},
      {"{}x", 0, DTR_ERR_PROTOCOL, "after the header"},
      {"{} {}", 0, DTR_ERR_PROTOCOL, "after the header"},
      {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4, DTR_ERR_PROTOCOL,
       "unknown key 'extra'"},
      {"{\"x\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, DTR_ERR_PROTOCOL, "lacks 'dtype'"},
      {"{\"x\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, DTR_ERR_PROTOCOL, "lacks 'shape'"},
      {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, DTR_ERR_PROTOCOL, "lacks 'data_offsets'"},
      {"{\"x\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
       DTR_ERR_PROTOCOL, "twice"},
      {T1("I8", "[4]", "[0,4]"), 4, DTR_ERR_UNSUPPORTED, "dtype I8"},
      {T1("F8_E4M3", "[4]", "[0,4]"), 4, DTR_ERR_UNSUPPORTED, "tensor 'x'"},
      {T1("float32", "[1]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "unknown dtype 'float32'"},
      {T1("F32", "[-1]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "non-negative integer"},
      {T1("F32", "[1.0]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "fraction"},
      {T1("F32", "[01]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "leading zero"},
      {T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "more than 8"},
      {T1("F32", "[99999999999999999999999]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "too large"},
      {T1("F32", "[4611686018427387904,4611686018427387904]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "need"},
      {T1("F32", "[1]", "[4,0]"), 4, DTR_ERR_PROTOCOL, "end before begin"},
      {T1("F32", "[1]", "[0]"), 4, DTR_ERR_PROTOCOL, "[begin, end]"},
      {T1("F32", "[1]", "[0,4,8]"), 4, DTR_ERR_PROTOCOL, "more than 2"},
      {T1("F32", "[2]", "[0,8]"), 4, DTR_ERR_PROTOCOL, "past the data section"},
      {T1("F32", "[2]", "[0,4]"), 4, DTR_ERR_PROTOCOL, "need 8 bytes"},
      {T1("F32", "[1]", "[4,8]"), 8, DTR_ERR_PROTOCOL, "a hole"},
      {T1("F32", "[1]", "[0,4]"), 8, DTR_ERR_PROTOCOL, "cover 4 data bytes but the file holds 8"},
      {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
       6, DTR_ERR_PROTOCOL, "overlapping"},
      {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
       8, DTR_ERR_PROTOCOL, "'x' appears twice"},
      {"{\"__metadata__\":{\"a\":1}}", 0, DTR_ERR_PROTOCOL, "not a string"},
      {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, DTR_ERR_PROTOCOL, "twice"},
      {"{\"a\\u0000b\":{}}", 0, DTR_ERR_PROTOCOL, "\\u0000"},
      {"{\"a\nb\":{}}", 0, DTR_ERR_PROTOCOL, "control character"},
      {"{\"a\\qb\":{}}", 0, DTR_ERR_PROTOCOL, "unknown escape"},
      {"{\"a\\ud800\":{}}", 0, DTR_ERR_PROTOCOL, "surrogate"},
      {"{\"a\\u12\":{}}", 0, DTR_ERR_PROTOCOL, "bad \\u escape"},
      {"{\"abc", 0, DTR_ERR_PROTOCOL, "unterminated"},
      {"{\"\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, DTR_ERR_PROTOCOL, "name empty"},
      {"{}", 4, DTR_ERR_PROTOCOL, "no tensors but 4"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[512] = "";
    dtr_result rc = parse(cases[i].json, cases[i].data_bytes, err, sizeof err, NULL, NULL);
    if (rc != cases[i].rc || !strstr(err, cases[i].needle) || !strstr(err, "hdr")) {
      fprintf(stderr, "case %zu (%s): rc %d (want %d), message '%s' (want '%s')\n", i, cases[i].json, (int)rc,
              (int)cases[i].rc, err, cases[i].needle);
      test_failures++;
    }
    test_checks++;
  }
}

static void write_raw(const char *path, const void *a, size_t n) {
  FILE *f = fopen(path, "wb");
  if (f) {
    fwrite(a, 1, n, f);
    fclose(f);
  }
}

/* One integer of a Hugging Face config.json: nested values of every kind skipped, absence and bad JSON
 * told apart. */
static void test_json_member(void) {
  char err[512];
  int64_t v = -1;
  const char *cfg =
      "{\"architectures\": [\"GPT2LMHeadModel\"], \"n_ctx\": 1024, \"task_specific_params\": {\"text\": "
      "{\"do_sample\": true, \"max_length\": 50, \"x\": [1, -2.5e3, null, \"a\\\"b\"]}}, "
      "\"layer_norm_epsilon\": 1e-05, \"n_head\": 12, \"n_layer\": 12}";
  CHECK_EQ_INT(dtr__json_member_int(cfg, strlen(cfg), "n_head", &v, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(v, 12);
  CHECK_EQ_INT(dtr__json_member_int(cfg, strlen(cfg), "n_ctx", &v, err, sizeof err), DTR_OK);
  CHECK_EQ_INT(v, 1024);
  /* nested keys are not top-level members; a member that is no integer is not one either */
  CHECK_EQ_INT(dtr__json_member_int(cfg, strlen(cfg), "max_length", &v, err, sizeof err), DTR_ERR_NOT_FOUND);
  CHECK_EQ_INT(dtr__json_member_int(cfg, strlen(cfg), "layer_norm_epsilon", &v, err, sizeof err),
               DTR_ERR_NOT_FOUND);
  CHECK_EQ_INT(dtr__json_member_int("{}", 2, "n_head", &v, err, sizeof err), DTR_ERR_NOT_FOUND);
  const char *bad = "{\"n_embd\": 768, \"n_head\" 12}";
  CHECK_EQ_INT(dtr__json_member_int(bad, strlen(bad), "n_head", &v, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "byte") != NULL);
  char deep[256] = "{\"a\": ";
  for (int k = 0; k < 80; k++) strcat(deep, "[");
  for (int k = 0; k < 80; k++) strcat(deep, "]");
  strcat(deep, "}");
  CHECK_EQ_INT(dtr__json_member_int(deep, strlen(deep), "n_head", &v, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "nested") != NULL);
}

static void test_bad_files(void) {
  char path[512], err[512];
  dtr__sft_file *f = NULL;
  path_in(path, sizeof path, "missing.safetensors");
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_ERR_NOT_FOUND);
  CHECK(strstr(err, "missing.safetensors") != NULL);

  path_in(path, sizeof path, "tiny.safetensors");
  write_raw(path, "abc", 3);
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "too short") != NULL);

  /* header length larger than the file, and absurdly large */
  unsigned char b[64] = {0};
  b[0] = 200;
  memcpy(b + 8, "{}", 2);
  path_in(path, sizeof path, "longhdr.safetensors");
  write_raw(path, b, 10);
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "header length 200") != NULL);
  memset(b, 0xff, 8);
  write_raw(path, b, 10);
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_ERR_PROTOCOL);

  /* a valid file cut short: the last tensor runs past the end */
  char good[512];
  path_in(good, sizeof good, "rt.safetensors");
  FILE *g = fopen(good, "rb");
  static unsigned char buf[4096];
  size_t n = g ? fread(buf, 1, sizeof buf, g) : 0;
  if (g) fclose(g);
  CHECK(n > 20);
  path_in(path, sizeof path, "cut.safetensors");
  write_raw(path, buf, n - 3);
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "cut.safetensors") != NULL && strstr(err, "truncated") != NULL);
  /* ... and with a byte too many */
  buf[n] = 0;
  write_raw(path, buf, n + 1);
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(strstr(err, "holds") != NULL);
  /* cut inside the header */
  write_raw(path, buf, 20);
  CHECK_EQ_INT(dtr__sft_open(path, &f, err, sizeof err), DTR_ERR_PROTOCOL);
  CHECK(f == NULL);
}

/* Mutate a valid header at random: never a crash, and every accepted header keeps its promises. */
static void test_mutations(void) {
  const char *base =
      "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
      "\"b\\u00e9\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
      "\"c\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[32,33]}}";
  size_t len = strlen(base);
  static const char alphabet[] = "{}[]\":,0123456789 \\u-.eFBIU";
  uint64_t x = 0x9e3779b97f4a7c15ull;
  int accepted = 0;
  char *buf = malloc(len + 8);
  for (int iter = 0; iter < 20000 && buf; iter++) {
    memcpy(buf, base, len);
    size_t n = len;
    int edits = 1 + (int)(x % 3);
    for (int e = 0; e < edits; e++) {
      test_xorshift64(&x);
      if (n == 0) break;
      size_t at = (size_t)(x % n);
      switch ((x >> 20) % 3) {
        case 0:
          buf[at] = alphabet[(x >> 32) % (sizeof alphabet - 1)];
          break;
        case 1:
          n = at;
          break; /* truncate */
        default:
          memmove(buf + at, buf + at + 1, n - at - 1);
          n--;
      }
    }
    dtr__sft_tensor *t = NULL;
    dtr__sft_meta *m = NULL;
    int nt = 0, nm = 0;
    char err[512];
    uint64_t data_bytes = 33 - (x >> 40) % 2;
    if (dtr__sft_parse_header(buf, n, data_bytes, "mut", &t, &nt, &m, &nm, err, sizeof err) == DTR_OK) {
      accepted++;
      uint64_t sum = 0;
      for (int i = 0; i < nt; i++) {
        uint64_t need;
        CHECK(dtr__sft_tensor_bytes(t[i].dtype, t[i].ndim, t[i].shape, &need) == 0 &&
              need == t[i].end - t[i].begin);
        CHECK(t[i].end <= data_bytes);
        sum += t[i].end - t[i].begin;
      }
      CHECK_EQ_INT(sum, data_bytes);
      dtr__sft_free_parsed(t, nt, m, nm);
    } else {
      CHECK(strstr(err, "mut") != NULL);
    }
  }
  free(buf);
  printf("mutations: %d of 20000 accepted\n", accepted);
}

int main(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/test_safetensors.XXXXXX");
  if (!mkdtemp(g_dir)) {
    perror("mkdtemp");
    return 1;
  }
  test_roundtrip();
  test_writer_misuse();
  test_parse_ok();
  test_parse_bad();
  test_bad_files();
  test_json_member();
  test_mutations();
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
  return TEST_EXIT();
}
