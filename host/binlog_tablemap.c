/* mocdc.binlog.lib: TABLE_MAP events. Each table id's map is parsed once and kept
 * (re-mapped only when the event's bytes change); names carry the want() decision and
 * the set_schema() columns; the map and the schema merge into the decoded columns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "binlog_internal.h"

void bl_strlist_free(strlist *sl) {
  if (!sl) return;
  for (int i = 0; i < sl->n; i++) free(sl->s[i]);
  free(sl->s);
  free(sl->l);
  sl->n = 0; sl->s = NULL; sl->l = NULL;
}

void bl_spec_free(colspec *spec, int n) {
  if (!spec) return;
  for (int i = 0; i < n; i++) {
    free(spec[i].name);
    free(spec[i].charset);
    bl_strlist_free(&spec[i].ev);
    bl_strlist_free(&spec[i].sv);
  }
  free(spec);
}

static void tmap_clear(tmap *t) {
  if (!t) return;
  if (t->names)
    for (int i = 0; i < t->ncols; i++) free(t->names[i]);
  if (t->lists)
    for (int i = 0; i < t->ncols; i++) bl_strlist_free(&t->lists[i]);
  if (t->ulists)
    for (int i = 0; i < t->ncols; i++) bl_strlist_free(&t->ulists[i]);
  free(t->names); free(t->sign); free(t->bin); free(t->lists); free(t->ulists); free(t->cs);
  free(t->types); free(t->meta); free(t->raw); free(t->cols);
  t->names = NULL; t->sign = NULL; t->bin = NULL; t->lists = NULL; t->ulists = NULL; t->cs = NULL;
  t->types = NULL; t->meta = NULL; t->raw = NULL; t->cols = NULL;
  t->ncols = 0; t->resolved = 0;
}

/* metadata bytes of a column type in the TABLE_MAP (rpl_utility.cc table_def) */
static int meta_len(uint8_t type) {
  switch (type) {
  case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB: case MYSQL_TYPE_LONG_BLOB:
  case MYSQL_TYPE_BLOB: case MYSQL_TYPE_DOUBLE: case MYSQL_TYPE_FLOAT:
  case MYSQL_TYPE_GEOMETRY: case T_JSON: case T_BLOB_COMPRESSED:
  case MYSQL_TYPE_TIME2: case MYSQL_TYPE_DATETIME2: case MYSQL_TYPE_TIMESTAMP2:
    return 1;
  case MYSQL_TYPE_SET: case MYSQL_TYPE_ENUM: case MYSQL_TYPE_STRING:
  case MYSQL_TYPE_BIT: case MYSQL_TYPE_VARCHAR: case MYSQL_TYPE_NEWDECIMAL:
  case T_VARCHAR_COMPRESSED:
    return 2;
  default:
    return 0;
  }
}

/* columns counted by the SIGNEDNESS optional metadata: MySQL counts the numeric
 * types; MariaDB also YEAR (Field_year is a Field_tiny there; mariadb-binlog
 * --print-table-metadata gets this wrong) */
static int is_signed_type(uint8_t t, int mariadb) {
  return (mariadb && t == MYSQL_TYPE_YEAR) || t == MYSQL_TYPE_TINY || t == MYSQL_TYPE_SHORT ||
         t == MYSQL_TYPE_INT24 || t == MYSQL_TYPE_LONG ||
         t == MYSQL_TYPE_LONGLONG || t == MYSQL_TYPE_NEWDECIMAL || t == MYSQL_TYPE_FLOAT ||
         t == MYSQL_TYPE_DOUBLE;
}

static int is_character_type(uint8_t t) {
  return t == MYSQL_TYPE_STRING || t == MYSQL_TYPE_VAR_STRING || t == MYSQL_TYPE_VARCHAR ||
         t == MYSQL_TYPE_BLOB || t == MYSQL_TYPE_GEOMETRY;
}
static int is_enum_set(uint8_t t) { return t == MYSQL_TYPE_ENUM || t == MYSQL_TYPE_SET; }

static uint32_t name_hash(const char *db, size_t dl, const char *tb, size_t tl) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < dl; i++) h = (h ^ (uint8_t)db[i]) * 16777619u;
  h = (h ^ 0xFF) * 16777619u;
  for (size_t i = 0; i < tl; i++) h = (h ^ (uint8_t)tb[i]) * 16777619u;
  return h;
}

tname *bl_name_get(stream *s, const char *db, size_t dl, const char *tb, size_t tl, int create) {
  uint32_t h = name_hash(db, dl, tb, tl);
  tname **slot = &s->names[h % NAME_BUCKETS];
  for (tname *n = *slot; n; n = n->next)
    if (n->hash == h && strlen(n->db) == dl && strlen(n->tbl) == tl && memcmp(n->db, db, dl) == 0 &&
        memcmp(n->tbl, tb, tl) == 0)
      return n;
  if (!create) return NULL;
  tname *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  n->db = malloc(dl + 1);
  n->tbl = malloc(tl + 1);
  if (!n->db || !n->tbl) { free(n->db); free(n->tbl); free(n); return NULL; }
  memcpy(n->db, db, dl); n->db[dl] = 0;
  memcpy(n->tbl, tb, tl); n->tbl[tl] = 0;
  n->hash = h;
  n->want = -1;
  n->next = *slot;
  *slot = n;
  return n;
}

tmap *bl_map_find(stream *s, uint64_t id) {
  for (tmap *t = s->maps[id % MAP_BUCKETS]; t; t = t->next)
    if (t->id == id) return t;
  return NULL;
}

void bl_maps_clear(stream *s) {
  for (int i = 0; i < MAP_BUCKETS; i++) {
    tmap *t = s->maps[i];
    while (t) {
      tmap *nx = t->next;
      tmap_clear(t);
      free(t);
      t = nx;
    }
    s->maps[i] = NULL;
  }
  s->nmaps = 0;
  s->acc_t = NULL;
  s->rc.active = 0;
}

void bl_names_clear(stream *s) {
  for (int i = 0; i < NAME_BUCKETS; i++) {
    tname *n = s->names[i];
    while (n) {
      tname *nx = n->next;
      bl_spec_free(n->spec, n->nspec);
      free(n->db); free(n->tbl); free(n);
      n = nx;
    }
    s->names[i] = NULL;
  }
}

/* Read a list of length-prefixed strings (COLUMN_NAME and ENUM/SET value lists). */
static int read_strlist(const uint8_t **pp, const uint8_t *end, strlist *out, uint64_t count) {
  if (count > 65536) return -1;
  out->s = calloc(count ? count : 1, sizeof *out->s);
  out->l = calloc(count ? count : 1, sizeof *out->l);
  if (!out->s || !out->l) return -1;
  for (uint64_t i = 0; i < count; i++) {
    uint64_t len;
    if (rd_packed(pp, end, &len) != 0 || (uint64_t)(end - *pp) < len) return -1;
    out->s[i] = malloc(len + 1);
    if (!out->s[i]) return -1;
    memcpy(out->s[i], *pp, len);
    out->s[i][len] = 0;
    out->l[i] = len;
    out->n = (int)i + 1;
    *pp += len;
  }
  return 0;
}

/* The optional metadata of a TABLE_MAP (binlog_row_metadata=MINIMAL|FULL) after its
 * fixed part at p: signedness, charsets, column names, ENUM/SET values. -1: corrupt. */
static int tmap_optional(stream *s, tmap *t, const uint8_t *p, const uint8_t *end) {
  while (p < end) {
    uint8_t ft = *p++;
    uint64_t fl;
    if (rd_packed(&p, end, &fl) != 0 || (uint64_t)(end - p) < fl) return -1;
    const uint8_t *f = p, *fend = p + fl;
    p = fend;
    switch (ft) {
    case SIGNEDNESS: {
      int k = 0;
      for (int i = 0; i < t->ncols; i++) {
        if (!is_signed_type(t->cols[i].type, s->mariadb)) continue;
        if ((size_t)(k / 8) < fl) t->sign[i] = (f[k / 8] >> (7 - k % 8)) & 1;
        k++;
      }
      break;
    }
    case DEFAULT_CHARSET: case ENUM_AND_SET_DEFAULT_CHARSET: {
      int es = ft == ENUM_AND_SET_DEFAULT_CHARSET;
      uint64_t def, idx, cs;
      if (rd_packed(&f, fend, &def) != 0) return -1;
      for (int i = 0; i < t->ncols; i++)
        if (es ? is_enum_set(t->cols[i].type) : is_character_type(t->cols[i].type)) {
          t->cs[i] = (uint16_t)def;
          if (!es) t->bin[i] = def == 63;
        }
      /* exceptions: (column index among those columns, collation) pairs */
      while (f < fend) {
        if (rd_packed(&f, fend, &idx) != 0 || rd_packed(&f, fend, &cs) != 0) return -1;
        int k = 0;
        for (int i = 0; i < t->ncols; i++) {
          if (!(es ? is_enum_set(t->cols[i].type) : is_character_type(t->cols[i].type))) continue;
          if ((uint64_t)k == idx) {
            t->cs[i] = (uint16_t)cs;
            if (!es) t->bin[i] = cs == 63;
            break;
          }
          k++;
        }
      }
      break;
    }
    case COLUMN_CHARSET: case ENUM_AND_SET_COLUMN_CHARSET: {
      int es = ft == ENUM_AND_SET_COLUMN_CHARSET;
      for (int i = 0; i < t->ncols && f < fend; i++) {
        if (!(es ? is_enum_set(t->cols[i].type) : is_character_type(t->cols[i].type))) continue;
        uint64_t cs;
        if (rd_packed(&f, fend, &cs) != 0) return -1;
        t->cs[i] = (uint16_t)cs;
        if (!es) t->bin[i] = cs == 63;
      }
      break;
    }
    case COLUMN_NAME: {
      strlist sl = {0, NULL, NULL};
      if (read_strlist(&f, fend, &sl, (uint64_t)t->ncols) != 0) { bl_strlist_free(&sl); return -1; }
      t->names = sl.s;          /* take the strings; lengths not needed */
      free(sl.l);
      t->has_names = 1;
      break;
    }
    case SET_STR_VALUE: case ENUM_STR_VALUE: {
      uint8_t want = ft == SET_STR_VALUE ? MYSQL_TYPE_SET : MYSQL_TYPE_ENUM;
      for (int i = 0; i < t->ncols && f < fend; i++) {
        if (t->cols[i].type != want) continue;
        uint64_t cnt;
        if (rd_packed(&f, fend, &cnt) != 0) return -1;
        bl_strlist_free(&t->lists[i]);
        if (read_strlist(&f, fend, &t->lists[i], cnt) != 0) return -1;
      }
      break;
    }
    default:
      break;                    /* GEOMETRY_TYPE, keys, ENUM/SET charsets: not needed */
    }
  }
  return 0;
}

/* Parse a TABLE_MAP body into t (fresh). Returns 0, or -1 with s->err set. */
static int tmap_parse(stream *s, tmap *t, const uint8_t *body, const uint8_t *end) {
  const uint8_t *p = body;
  int ph = s->post_hdr[TABLE_MAP_EVENT - 1] ? s->post_hdr[TABLE_MAP_EVENT - 1] : 8;
  if (end - p < ph + 2) goto corrupt;
  t->id = ph == 6 ? le32(p) : le48(p);
  p += ph;
  size_t dl = *p++;
  if ((size_t)(end - p) < dl + 2) goto corrupt;
  const char *db = (const char *)p;
  p += dl + 1;
  size_t tl = *p++;
  if ((size_t)(end - p) < tl + 1) goto corrupt;
  const char *tb = (const char *)p;
  p += tl + 1;
  uint64_t nc;
  if (rd_packed(&p, end, &nc) != 0 || nc > 4096 || (uint64_t)(end - p) < nc) goto corrupt;
  t->ncols = (int)nc;
  int n = t->ncols ? t->ncols : 1;
  t->types = malloc((size_t)n);
  t->meta = calloc((size_t)n, sizeof *t->meta);
  t->sign = malloc((size_t)n);
  t->bin = malloc((size_t)n);
  t->lists = calloc((size_t)n, sizeof *t->lists);
  t->ulists = calloc((size_t)n, sizeof *t->ulists);
  t->cs = calloc((size_t)n, sizeof *t->cs);
  t->cols = calloc((size_t)n, sizeof *t->cols);
  if (!t->types || !t->meta || !t->sign || !t->bin || !t->lists || !t->ulists || !t->cs || !t->cols) goto oom;
  memcpy(t->types, p, (size_t)nc);
  memset(t->sign, -1, (size_t)n);
  memset(t->bin, -1, (size_t)n);
  p += nc;
  uint64_t ml;
  if (rd_packed(&p, end, &ml) != 0 || (uint64_t)(end - p) < ml) goto corrupt;
  const uint8_t *m = p, *mend = p + ml;
  for (int i = 0; i < t->ncols; i++) {
    uint8_t ty = t->types[i];
    int l = meta_len(ty);
    if (mend - m < l) goto corrupt;
    if (l == 1) t->meta[i] = m[0];
    else if (l == 2) {
      if (ty == MYSQL_TYPE_VARCHAR || ty == T_VARCHAR_COMPRESSED) t->meta[i] = (uint16_t)le16(m);
      else if (ty == MYSQL_TYPE_BIT) t->meta[i] = (uint16_t)(m[0] | (m[1] << 8)); /* bits%8, bytes */
      else t->meta[i] = (uint16_t)((m[0] << 8) | m[1]);                         /* STRING/ENUM/SET/DECIMAL */
    }
    m += l;
  }
  p = mend;
  size_t nb = ((size_t)nc + 7) / 8;
  if ((size_t)(end - p) < nb) goto corrupt;
  p += nb;                                  /* nullability: not needed */

  t->sig = 2166136261u;
  for (int i = 0; i < t->ncols; i++) {
    t->sig = (t->sig ^ t->types[i]) * 16777619u;
    t->sig = (t->sig ^ (t->meta[i] & 0xFF)) * 16777619u;
    t->sig = (t->sig ^ (t->meta[i] >> 8)) * 16777619u;
  }
  if (!t->sig) t->sig = 1;

  /* bcol setup first: optional metadata needs real types (ENUM/SET) */
  for (int i = 0; i < t->ncols; i++) bl_col_setup(&t->cols[i], t->types[i], t->meta[i]);

  if (tmap_optional(s, t, p, end) != 0) goto corrupt;
  t->nm = bl_name_get(s, db, dl, tb, tl, 1);
  if (!t->nm) goto oom;
  return 0;
corrupt:
  snprintf(s->err, ERRLEN, "corrupt TABLE_MAP event at %s:%llu", s->file, (unsigned long long)s->pos);
  return -1;
oom:
  snprintf(s->err, ERRLEN, "out of memory reading a TABLE_MAP event");
  return -1;
}

static const colspec *spec_for(const tname *nm, const tmap *t, int i) {
  if (!nm->spec) return NULL;
  if (!t->has_names) return i < nm->nspec ? &nm->spec[i] : NULL;
  if (i < nm->nspec && nm->spec[i].name && strcmp(nm->spec[i].name, t->names[i]) == 0) return &nm->spec[i];
  for (int k = 0; k < nm->nspec; k++)
    if (nm->spec[k].name && strcmp(nm->spec[k].name, t->names[i]) == 0) return &nm->spec[k];
  return NULL;
}

/* Column i of t from the table map and the set_schema() columns: class, sign, charset
 * converter, ENUM/SET values. 0, or -1 with s->err set. */
static int resolve_column(stream *s, tmap *t, int i) {
  tname *nm = t->nm;
  bcol *c = &t->cols[i];
  const colspec *cs = spec_for(nm, t, i);
  bl_col_setup(c, t->types[i], t->meta[i]);
  c->name = t->has_names ? t->names[i] : cs->name;
  c->uns = t->sign[i] >= 0 ? (uint8_t)t->sign[i] : (uint8_t)(cs && cs->uns);
  c->binary = t->bin[i] >= 0 ? (uint8_t)t->bin[i] : (uint8_t)(cs && cs->cls == MOCDC_BIN);
  c->decimals = cs ? cs->decimals : -1;
  c->zerofill = cs ? cs->zerofill : 0;
  c->vals = NULL;
  c->cls = (uint8_t)bl_type_class(c);
  if (t->bin[i] < 0 && cs && cs->cls >= 0 && (c->cls == MOCDC_STR || c->cls == MOCDC_BIN) &&
      (c->type == MYSQL_TYPE_STRING || c->type == MYSQL_TYPE_VARCHAR || c->type == MYSQL_TYPE_BLOB))
    c->cls = (uint8_t)cs->cls;
  /* text in a charset other than utf8mb4: converted as a utf8mb4 SELECT would */
  c->cv = NULL;
  int texty = !c->binary && (c->type == MYSQL_TYPE_STRING || c->type == MYSQL_TYPE_VARCHAR ||
                             c->type == MYSQL_TYPE_BLOB || is_enum_set(c->type));
  if (texty) {
    const char *csname = NULL, *enc = NULL;
    MARIADB_CHARSET_INFO *ci = NULL;
    if (t->cs[i]) ci = mariadb_get_charset_by_nr(t->cs[i]);   /* unknown ids: assumed utf8 */
    else if (cs && cs->charset) ci = mariadb_get_charset_by_name(cs->charset);
    if (ci) { csname = ci->csname; enc = ci->encoding; }
    else if (!t->cs[i] && cs && cs->charset) csname = cs->charset;
    if (!bl_charset_is_utf8(csname)) {
      c->cv = bl_conv_get(s, csname, enc);
      if (!c->cv) {
        snprintf(s->err, ERRLEN, "column `%s` of `%s`.`%s` is in charset %s, which mocdc cannot convert to utf8mb4 "
                 "(no iconv converter)", c->name ? c->name : "?", nm->db, nm->tbl, csname);
        return -1;
      }
    }
  }
  if (c->type == MYSQL_TYPE_ENUM || c->type == MYSQL_TYPE_SET) {
    int is_set = c->type == MYSQL_TYPE_SET;
    if (t->lists[i].n && c->cv) {     /* values from the table map are in the column's charset */
      if (!t->ulists[i].n && bl_convert_list(c->cv, &t->lists[i], &t->ulists[i]) != 0) {
        snprintf(s->err, ERRLEN, "out of memory");
        return -1;
      }
      c->vals = &t->ulists[i];
    } else if (t->lists[i].n) {
      c->vals = &t->lists[i];
    } else if (cs && (is_set ? cs->sv.n : cs->ev.n)) {   /* from information_schema: utf8mb4 */
      c->vals = is_set ? &cs->sv : &cs->ev;
    } else {
      snprintf(s->err, ERRLEN,
               "column `%s` of `%s`.`%s` is %s but its values are unknown: set "
               "binlog_row_metadata=FULL on the source, or give %s_values in set_schema",
               c->name, nm->db, nm->tbl, is_set ? "a SET" : "an ENUM", is_set ? "set" : "enum");
      return -1;
    }
    c->cv = NULL;                     /* the value lists are utf8mb4 now */
  }
  if (!c->name) {
    snprintf(s->err, ERRLEN, "column %d of `%s`.`%s` has no name in the schema given", i + 1, nm->db, nm->tbl);
    return -1;
  }
  return 0;
}

/* Merge the table map with set_schema() into t->cols.
 * Returns 0 ok, 1 column names missing (need_schema), -1 error (s->err). */
int bl_tmap_resolve(stream *s, tmap *t) {
  tname *nm = t->nm;
  if (t->resolved && t->resolved_gen == nm->gen) return 0;
  if (!t->has_names && !nm->spec) return 1;
  /* without names in the binlog, a schema given for other column types (a DDL
   * happened since) must be given again */
  if (!t->has_names && nm->spec_sig && nm->spec_sig != t->sig) return 1;
  if (!t->has_names && nm->nspec != t->ncols) {
    snprintf(s->err, ERRLEN,
             "the schema given for `%s`.`%s` has %d columns but its binlog rows have %d "
             "(did a DDL change the table? give the schema as of this binlog position)",
             nm->db, nm->tbl, nm->nspec, t->ncols);
    return -1;
  }
  for (int i = 0; i < t->ncols; i++)
    if (resolve_column(s, t, i) != 0) return -1;
  t->resolved = 1;
  t->resolved_gen = nm->gen;
  if (!t->has_names) nm->spec_sig = t->sig;
  return 0;
}

/* Parse a changed TABLE_MAP body into the cache entry of table id `id` (t: the
 * entry it replaces, or NULL). Returns the entry, or NULL with s->err set (a
 * replaced entry is unlinked and freed). */
static tmap *map_store(stream *s, tmap *t, uint64_t id, const uint8_t *b, const uint8_t *e) {
  size_t rawlen = (size_t)(e - b);
  int fresh = !t;
  if (fresh) {
    t = calloc(1, sizeof *t);
    if (!t) { snprintf(s->err, ERRLEN, "out of memory"); return NULL; }
  } else {
    tmap_clear(t);
  }
  t->raw = malloc(rawlen ? rawlen : 1);
  if (!t->raw || tmap_parse(s, t, b, e) != 0) {
    if (!t->raw) snprintf(s->err, ERRLEN, "out of memory");
    if (!fresh) {   /* unlink */
      tmap **pp = &s->maps[id % MAP_BUCKETS];
      while (*pp && *pp != t) pp = &(*pp)->next;
      if (*pp) *pp = t->next;
      s->nmaps--;
    }
    tmap_clear(t);
    free(t);
    return NULL;
  }
  memcpy(t->raw, b, rawlen);
  t->rawlen = rawlen;
  if (fresh) {
    t->next = s->maps[id % MAP_BUCKETS];
    s->maps[id % MAP_BUCKETS] = t;
    s->nmaps++;
  }
  return t;
}

/* TABLE_MAP: cached per table id (parsed again only when its bytes change); the
 * first sight of a table is a "table" event. */
int bl_ev_table_map(lua_State *L, stream *s) {
  const uint8_t *b, *e;
  bl_body_of(s, &b, &e);
  int ph = s->post_hdr[TABLE_MAP_EVENT - 1] ? s->post_hdr[TABLE_MAP_EVENT - 1] : 8;
  if (e - b < ph) return bl_corrupt(s);
  uint64_t id = ph == 6 ? le32(b) : le48(b);
  size_t rawlen = (size_t)(e - b);
  tmap *t = bl_map_find(s, id);
  if (!t || t->rawlen != rawlen || memcmp(t->raw, b, rawlen) != 0) {
    if (t && t == s->acc_t && bl_have_rows(s)) return bl_push_rows(L, s);   /* re-mapped mid-batch: flush first */
    t = map_store(s, t, id, b, e);
    if (!t) return -1;
  }
  if (!t->nm->announced) {
    if (bl_have_rows(s)) return bl_push_rows(L, s);
    t->nm->announced = 1;
    bl_consume(s);
    new_event(L, "table", 2);
    set_str(L, "db", t->nm->db, strlen(t->nm->db));
    set_str(L, "table", t->nm->tbl, strlen(t->nm->tbl));
    return 1;
  }
  bl_consume(s);
  return 0;
}
