/* mocdc.binlog.lib: rows events. Row images are decoded straight into a mocdc_batch;
 * consecutive rows events of one table are appended into one batch (up to max_rows /
 * max_bytes), so Lua is crossed once per batch, never per row, and memory is bounded by
 * one batch plus one event, whatever the size of a transaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "binlog_internal.h"

static int ensure_vcap(stream *s, int ncols) {
  if (s->vcap >= ncols) return 0;
  int n = ncols < 64 ? 64 : ncols;
  vref *vr = realloc(s->vr, sizeof *vr * (size_t)n * 2);
  if (vr) s->vr = vr;
  const char **vp = realloc(s->vp, sizeof *vp * (size_t)n * 2);
  if (vp) s->vp = vp;
  unsigned long *vl = realloc(s->vl, sizeof *vl * (size_t)n * 2);
  if (vl) s->vl = vl;
  if (!vr || !vp || !vl) return -1;
  s->vcap = n;
  return 0;
}

/* Post-header length of a rows event; *v2: a v2 event (with the extra-data field). */
static int rows_post_header(stream *s, int type, int *v2) {
  *v2 = type == WRITE_ROWS_EVENT || type == UPDATE_ROWS_EVENT || type == DELETE_ROWS_EVENT ||
        type == WRITE_ROWS_COMPRESSED_EVENT || type == UPDATE_ROWS_COMPRESSED_EVENT ||
        type == DELETE_ROWS_COMPRESSED_EVENT;
  return s->post_hdr[type - 1] ? s->post_hdr[type - 1] : (*v2 ? 10 : 8);
}

/* Start decoding a rows event: table id, bitmaps, (uncompressed) row data. */
static int rows_begin(stream *s, tmap *t, int type) {
  const uint8_t *b, *e;
  bl_body_of(s, &b, &e);
  int v2;
  int ph = rows_post_header(s, type, &v2);
  int compressed = type >= WRITE_ROWS_COMPRESSED_EVENT_V1 && type <= DELETE_ROWS_COMPRESSED_EVENT;
  const uint8_t *p = b;
  if (e - p < ph) goto corrupt;
  p += ph;
  if (v2 && ph >= 10) {
    uint32_t extra = le16(b + 8);
    if (extra < 2 || (uint32_t)(e - p) < extra - 2) goto corrupt;
    p += extra - 2;
  }
  uint64_t nc;
  if (rd_packed(&p, e, &nc) != 0) goto corrupt;
  if ((int)nc != t->ncols) {
    snprintf(s->err, ERRLEN, "rows event for `%s`.`%s` has %llu columns but its table map has %d (at %s:%llu)",
             t->nm->db, t->nm->tbl, (unsigned long long)nc, t->ncols, s->file, (unsigned long long)s->pos);
    return -1;
  }
  size_t nb = ((size_t)nc + 7) / 8;
  int nbm = (type == UPDATE_ROWS_EVENT_V1 || type == UPDATE_ROWS_EVENT || type == UPDATE_ROWS_COMPRESSED_EVENT_V1 ||
             type == UPDATE_ROWS_COMPRESSED_EVENT) ? 2 : 1;
  if ((size_t)(e - p) < nb * (size_t)nbm) goto corrupt;
  for (int k = 0; k < nbm; k++, p += nb)
    for (int i = 0; i < t->ncols; i++)
      if (!(p[i / 8] & (1 << (i % 8)))) {
        snprintf(s->err, ERRLEN,
                 "binlog rows of `%s`.`%s` are not full row images (column %d missing at %s:%llu); mocdc needs "
                 "binlog_row_image=FULL on the source (SET GLOBAL binlog_row_image=FULL, or "
                 "binlog_row_image=FULL in my.cnf)", t->nm->db, t->nm->tbl, i + 1, s->file,
                 (unsigned long long)s->pos);
        return -1;
      }
  if (compressed) {
    if (bl_uncompress(p, (size_t)(e - p), &s->ubuf, s->err) != 0) return -1;
    p = (const uint8_t *)s->ubuf.p;
    e = p + s->ubuf.len;
  }
  s->rc.active = 1;
  s->rc.t = t;
  s->rc.p = p;
  s->rc.end = e;
  switch (type) {
  case WRITE_ROWS_EVENT_V1: case WRITE_ROWS_EVENT: case WRITE_ROWS_COMPRESSED_EVENT_V1:
  case WRITE_ROWS_COMPRESSED_EVENT:
    s->rc.op = MOCDC_INSERT; break;
  case UPDATE_ROWS_EVENT_V1: case UPDATE_ROWS_EVENT: case UPDATE_ROWS_COMPRESSED_EVENT_V1:
  case UPDATE_ROWS_COMPRESSED_EVENT:
    s->rc.op = MOCDC_UPDATE; break;
  default:
    s->rc.op = MOCDC_DELETE;
  }
  return 0;
corrupt:
  snprintf(s->err, ERRLEN, "corrupt rows event at %s:%llu", s->file, (unsigned long long)s->pos);
  return -1;
}

/* Decode one image (null bitmap + values) into vr[0..ncols). */
static int decode_image(stream *s, tmap *t, const uint8_t **pp, const uint8_t *end, vref *vr) {
  const uint8_t *p = *pp;
  size_t nb = ((size_t)t->ncols + 7) / 8;
  if ((size_t)(end - p) < nb) goto trunc;
  const uint8_t *nulls = p;
  p += nb;
  for (int i = 0; i < t->ncols; i++) {
    if (nulls[i / 8] & (1 << (i % 8))) {
      vr[i].p = NULL; vr[i].len = 0; vr[i].soff = -1;
      continue;
    }
    long n = bl_decode_value(&t->cols[i], p, end, &s->scratch, &vr[i]);
    if (n == DEC_UNSUPPORTED) {
      const bcol *c = &t->cols[i];
      snprintf(s->err, ERRLEN, "column `%s` of `%s`.`%s`: %s is not supported yet (binlog type %d)",
               c->name, t->nm->db, t->nm->tbl, bl_type_name(c->type), c->type);
      return -1;
    }
    if (n < 0) goto trunc;
    p += n;
  }
  *pp = p;
  return 0;
trunc:
  snprintf(s->err, ERRLEN, "truncated row in the rows event of `%s`.`%s` at %s:%llu", t->nm->db, t->nm->tbl,
           s->file, (unsigned long long)s->pos);
  for (int i = 0; i < t->ncols; i++) {
    uint8_t ty = t->cols[i].type;
    if (s->mariadb && (ty == MYSQL_TYPE_TIME || ty == MYSQL_TYPE_DATETIME || ty == MYSQL_TYPE_TIMESTAMP)) {
      size_t n = strlen(s->err);
      snprintf(s->err + n, ERRLEN - n, "; the table has TIME/DATETIME/TIMESTAMP columns in the pre-10.1 MariaDB "
               "format (mysql56_temporal_format=OFF), which cannot be read from the binlog when they have fractional "
               "seconds: convert the table with ALTER TABLE `%s`.`%s` FORCE", t->nm->db, t->nm->tbl);
      break;
    }
  }
  return -1;
}

static mocdc_batch *batch_for(tmap *t) {
  mocdc_batch *b = mocdc_batch_new(t->ncols);
  if (!b) return NULL;
  for (int i = 0; i < t->ncols; i++)
    if (mocdc_batch_set_column(b, i, t->cols[i].name, t->cols[i].cls) != 0) {
      mocdc_batch_free(b);
      return NULL;
    }
  return b;
}

/* Append rows of the current rows event to s->acc until the event ends or the
 * batch is full. Returns 1 event finished, 0 batch full (event continues), -1 error. */
static int rows_decode(stream *s, size_t max_rows, size_t max_bytes) {
  tmap *t = s->rc.t;
  int nc = t->ncols;
  uint32_t ts = le32(s->h);
  if (ensure_vcap(s, nc) != 0) goto oom;
  vref *bv = s->vr, *av = s->vr + nc;
  const char **bp = s->vp, **ap = s->vp + nc;
  unsigned long *bl = s->vl, *al = s->vl + nc;
  while (s->rc.p < s->rc.end) {
    if (s->acc->nrows >= max_rows || mocdc_batch_bytes(s->acc) >= max_bytes) return 0;
    const uint8_t *p = s->rc.p;
    s->scratch.len = 0;
    int op = s->rc.op;
    vref *first = op == MOCDC_INSERT ? av : bv;
    if (decode_image(s, t, &p, s->rc.end, first) != 0) return -1;
    if (op == MOCDC_UPDATE && decode_image(s, t, &p, s->rc.end, av) != 0) return -1;
    int has_b = op != MOCDC_INSERT, has_a = op != MOCDC_DELETE;
    for (int i = 0; i < nc; i++) {
      if (has_b) {
        vref *v = &bv[i];
        bp[i] = v->soff >= 0 ? s->scratch.p + v->soff : v->p;
        bl[i] = (unsigned long)v->len;
      }
      if (has_a) {
        vref *v = &av[i];
        ap[i] = v->soff >= 0 ? s->scratch.p + v->soff : v->p;
        al[i] = (unsigned long)v->len;
      }
    }
    if (mocdc_batch_add(s->acc, op, ts, has_b ? bp : NULL, has_b ? bl : NULL, has_a ? ap : NULL,
                        has_a ? al : NULL) != 0)
      goto oom;
    s->rc.p = p;
    s->n_rows++;
  }
  return 1;
oom:
  snprintf(s->err, ERRLEN, "out of memory decoding rows of `%s`.`%s`", t->nm->db, t->nm->tbl);
  return -1;
}

/* Push the accumulated batch as a "rows" event. */
int bl_push_rows(lua_State *L, stream *s) {
  /* the batch's memory is invisible to Lua's collector: account for it, so
   * batches the caller dropped without batch:free() do not pile up */
  int kb = (int)(mocdc_batch_bytes(s->acc) >> 10);
  if (kb > 0) lua_gc(L, LUA_GCSTEP, kb);
  new_event(L, "rows", 8);
  set_str(L, "db", s->acc_t->nm->db, strlen(s->acc_t->nm->db));
  set_str(L, "table", s->acc_t->nm->tbl, strlen(s->acc_t->nm->tbl));
  mocdc_batch_push(L, s->acc);
  lua_setfield(L, -2, "batch");
  lua_pushstring(L, s->file);
  lua_setfield(L, -2, "file");
  set_num(L, "pos", (double)s->acc_pos);
  set_num(L, "ts", (double)s->acc_ts);
  if (s->acc_more) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "more");
  }
  s->acc = NULL;
  s->acc_t = NULL;
  s->acc_more = 0;
  return 1;
}

/* true when rows are waiting to be pushed; an empty batch (a rows event without
 * rows) is dropped here */
int bl_have_rows(stream *s) {
  if (!s->acc) return 0;
  if (s->acc->nrows) return 1;
  mocdc_batch_free(s->acc);
  s->acc = NULL;
  s->acc_t = NULL;
  s->acc_more = 0;
  return 0;
}

/* need_schema for t's table (once: asked again without a set_schema() is an error). */
static int need_schema(lua_State *L, stream *s, tmap *t) {
  if (bl_have_rows(s)) return bl_push_rows(L, s);
  if (s->need_sent == t->nm) {
    snprintf(s->err, ERRLEN,
             "no column names for `%s`.`%s`: the source does not log them (binlog_row_metadata=FULL is "
             "off) and set_schema() was not called after need_schema", t->nm->db, t->nm->tbl);
    return -1;
  }
  s->need_sent = t->nm;
  new_event(L, "need_schema", 3);
  set_str(L, "db", t->nm->db, strlen(t->nm->db));
  set_str(L, "table", t->nm->tbl, strlen(t->nm->tbl));
  set_num(L, "columns", t->ncols);
  return 1;
}

/* A new rows event: its table map, resolved, and the event's rows begun (*tp set).
 * *tp stays NULL when the event is not decoded now; the return value then is what
 * bl_ev_rows returns (skipped undecoded, rows flushed first, need_schema, error). */
static int rows_start(lua_State *L, stream *s, int type, tmap **tp) {
  const uint8_t *b, *e;
  *tp = NULL;
  bl_body_of(s, &b, &e);
  int v2;
  int ph = rows_post_header(s, type, &v2);
  if (e - b < ph) return bl_corrupt(s);
  uint64_t id = ph == 6 ? le32(b) : le48(b);
  tmap *t = bl_map_find(s, id);
  if (!t) {
    snprintf(s->err, ERRLEN, "rows event for unknown table id %llu at %s:%llu (stream started mid-statement?)",
             (unsigned long long)id, s->file, (unsigned long long)s->pos);
    return -1;
  }
  if (t->nm->want == 0) { bl_consume(s); return 0; }   /* unwanted: skipped undecoded */
  int r = bl_tmap_resolve(s, t);
  if (r < 0) return -1;
  if (r == 1) return need_schema(L, s, t);
  s->need_sent = NULL;
  if (s->acc && s->acc_t != t && bl_have_rows(s)) return bl_push_rows(L, s);
  if (rows_begin(s, t, type) != 0) return -1;
  *tp = t;
  return 0;
}

/* WRITE / UPDATE / DELETE rows (v1, v2, compressed): appended to the batch of their
 * table; the batch is pushed when it is full or another table's rows come. */
int bl_ev_rows(lua_State *L, stream *s, int type, size_t max_rows, size_t max_bytes) {
  tmap *t = s->rc.active ? s->rc.t : NULL;
  if (!t) {
    int r = rows_start(L, s, type, &t);
    if (!t) return r;
  }
  if (s->acc && s->acc_t != t && bl_have_rows(s)) return bl_push_rows(L, s);
  if (s->acc && s->acc_t != t) bl_have_rows(s);   /* empty: dropped */
  if (!s->acc) {
    s->acc = batch_for(t);
    if (!s->acc) { snprintf(s->err, ERRLEN, "out of memory"); return -1; }
    s->acc_t = t;
  }
  s->acc_pos = le32(s->h + 13) ? le32(s->h + 13) : s->pos;
  s->acc_ts = le32(s->h);
  int r = rows_decode(s, max_rows, max_bytes);
  if (r < 0) return -1;
  if (r == 1) { bl_consume(s); s->acc_more = 0; }
  else { s->acc_more = 1; return bl_push_rows(L, s); }
  if (s->acc->nrows >= max_rows || mocdc_batch_bytes(s->acc) >= max_bytes) return bl_push_rows(L, s);
  return 0;
}
