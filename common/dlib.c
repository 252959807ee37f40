/* dtr__dl_load (common/dlib.h): the one way libdtrain opens a library it does not link. */
#define _GNU_SOURCE
#include "common/dlib.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/param.h"

dtr_result dtr__dl_load(const char *what, const char *param, const char *const *names, int nnames, int flags,
                        const dtr__dl_sym *syms, int nsyms, void **handle, char *err, size_t errcap) {
  *handle = NULL;
  const char *forced = param ? dtr__param_str(param, NULL) : NULL;
  char tried[512] = "", why[512] = "";
  void *h = NULL;
  const char *name = NULL;
  for (int i = forced ? -1 : 0; i < (forced ? 0 : nnames) && !h; i++) {
    name = i < 0 ? forced : names[i];
    h = dlopen(name, flags);
    if (!h) {
      const char *e = dlerror();
      snprintf(why, sizeof why, "%s", e ? e : "unknown reason");
      size_t at = strlen(tried);
      snprintf(tried + at, sizeof tried - at, "%s%s", at ? ", " : "", name);
    }
  }
  if (!h)
    return dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED, "%s is not installed here: cannot load %s (%s)%s%s%s",
                     what, tried, why, forced ? "; " : "", forced ? param : "", forced ? " names it" : "");
  for (int i = 0; i < nsyms; i++) {
    *syms[i].slot = dlsym(h, syms[i].name);
    if (!*syms[i].slot) {
      dtr_result rc = dtr__fail(err, errcap, DTR_ERR_UNSUPPORTED, "%s: %s has no %s (too old a version?)",
                                what, name, syms[i].name);
      for (int k = 0; k < nsyms; k++) *syms[k].slot = NULL;
      dlclose(h);
      return rc;
    }
  }
  DTR_DEBUG("%s: loaded %s", what, name);
  *handle = h;
  return DTR_OK;
}

dtr_result dtr__dl_load_once(dtr__dl_once *l, char *err, size_t errcap) {
  static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* loads are rare: one lock for all */
  pthread_mutex_lock(&mu);
  if (!l->tried) {
    l->rc = dtr__dl_load(l->what, l->param, l->names, l->names[1] ? 2 : 1, l->flags, l->syms, l->nsyms,
                         &l->handle, l->err, sizeof l->err);
    l->tried = 1;
  }
  dtr_result rc = l->rc;
  pthread_mutex_unlock(&mu);
  if (rc != DTR_OK) return dtr__fail(err, errcap, rc, "%s", l->err);
  return DTR_OK;
}
