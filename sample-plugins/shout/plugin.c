/*
 * The C half of the Go sample plugin (see shout.go): its descriptor, plugin_factory, the ABI
 * mark, and the functions the host calls, each passing the call on to a Go export.
 */
#include "plugin_api.h"

#include <stdlib.h>

#include "_cgo_export.h"

static PluginStatus fail(const PluginErrorSink *error, const char *message) {
  error->set(error->ctx, plugin_str_from_cstr(message));
  return PLUGIN_ERROR;
}

static PluginStatus shout_create(const PluginHost *host, PluginStr config, void **out_instance,
                                 const PluginErrorSink *error) {
  char reason[256];
  uintptr_t handle = 0;
  size_t len = shoutCreate((char *)config.ptr, config.len, &handle, reason, sizeof reason);
  if (len > 0) {
    PluginStr message = {(const uint8_t *)reason, len};
    error->set(error->ctx, message);
    return PLUGIN_ERROR;
  }
  host->log(host->ctx, PLUGIN_LOG_INFO, plugin_str_from_cstr("created"));
  *out_instance = (void *)handle;
  return PLUGIN_OK;
}

static void shout_destroy(void *instance) { shoutDestroy((uintptr_t)instance); }

static PluginStatus word(void *instance, void *user_data, const PluginRequest *request,
                         const PluginResponse *response, const PluginErrorSink *error) {
  char text[512];
  long len;
  PluginBytes body;
  (void)user_data;
  /* The route has one parameter, {word}. */
  if (request->param_count != 1) return fail(error, "expected one parameter");
  len = shoutWord((uintptr_t)instance, (char *)request->params[0].value.ptr,
                  request->params[0].value.len, text, sizeof text);
  if (len < 0) return fail(error, "the word is too long");
  body.ptr = (const uint8_t *)text;
  body.len = (size_t)len;
  return response->write_body(response->ctx, body);
}

static PluginStatus upper(void *instance, void *user_data, const PluginRequest *request,
                          const PluginResponse *response, const PluginErrorSink *error) {
  PluginBytes body;
  PluginStatus status;
  char *copy;
  (void)instance;
  (void)user_data;
  if (request->body.len == 0) {
    if (response->set_status(response->ctx, 400) != PLUGIN_OK) return fail(error, "status refused");
    return response->write_body(response->ctx, (PluginBytes){(const uint8_t *)"send a body\n", 12});
  }
  copy = malloc(request->body.len);
  if (copy == NULL) return fail(error, "out of memory");
  memcpy(copy, request->body.ptr, request->body.len);
  if (shoutBody(copy, request->body.len) != 0) {
    free(copy);
    return fail(error, "the Go code failed");
  }
  body.ptr = (const uint8_t *)copy;
  body.len = request->body.len;
  status = response->write_body(response->ctx, body); /* the host copies the bytes */
  free(copy);
  return status;
}

static PluginStatus add(const PluginRouteSink *sink, const char *method, const char *path,
                        PluginStatus (*handler)(void *, void *, const PluginRequest *,
                                                const PluginResponse *, const PluginErrorSink *)) {
  PluginRoute route;
  memset(&route, 0, sizeof route);
  route.struct_size = sizeof route;
  route.method = plugin_str_from_cstr(method);
  route.path = plugin_str_from_cstr(path);
  route.handler = handler;
  return sink->add(sink->ctx, &route);
}

static PluginStatus shout_routes(void *instance, const PluginRouteSink *sink,
                                 const PluginErrorSink *error) {
  (void)instance;
  if (add(sink, "GET", "/shout/{word}", word) != PLUGIN_OK ||
      add(sink, "POST", "/shout", upper) != PLUGIN_OK) {
    return fail(error, "the host refused a route");
  }
  return PLUGIN_OK;
}

PLUGIN_ABI_MARK;

static const PluginDescriptor DESCRIPTOR = {
    .header = {PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, sizeof(PluginDescriptor), 0},
    .name = {(const uint8_t *)"shout", 5},
    .version = {(const uint8_t *)"1.0.0", 5},
    .rust_layout = NULL,
    .create = shout_create,
    .start = NULL,
    .stop = NULL,
    .destroy = shout_destroy,
    .routes = shout_routes,
};

PLUGIN_EXPORT const PluginDescriptor *plugin_factory(const PluginFactoryArgs *args) {
  (void)args;
  return &DESCRIPTOR;
}
