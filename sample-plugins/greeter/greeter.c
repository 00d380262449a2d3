/*
 * greeter: a sample plugin in plain C11, written against include/plugin_api.h only.
 *
 *   GET  /greet/{name}   "Hello, {name}!"  (?greeting=Hi changes the greeting)
 *   GET  /c/hello        "hello from C"
 *   POST /c/echo         the request body, with the request's content-type
 */
#include "plugin_api.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
  const PluginHost *host; /* valid until the library is unloaded */
} Greeter;

static int str_eq(PluginStr s, const char *c) {
  size_t n = strlen(c);
  return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

static void log_info(const Greeter *g, const char *message) {
  g->host->log(g->host->ctx, PLUGIN_LOG_INFO, plugin_str_from_cstr(message));
}

static PluginStatus fail(const PluginErrorSink *error, const char *message) {
  error->set(error->ctx, plugin_str_from_cstr(message));
  return PLUGIN_ERROR;
}

static PluginStatus write_text(const PluginResponse *response, const char *text, size_t len) {
  PluginBytes type = {(const uint8_t *)"text/plain; charset=utf-8", 25};
  PluginBytes body = {(const uint8_t *)text, len};
  PluginStatus status = response->add_header(response->ctx, plugin_str_from_cstr("content-type"), type);
  return status != PLUGIN_OK ? status : response->write_body(response->ctx, body);
}

/* The value of `key` in a query string such as `a=1&greeting=Hi`, or an empty string. */
static PluginStr query_value(PluginStr query, const char *key) {
  PluginStr none = {NULL, 0};
  size_t key_len = strlen(key), i = 0;
  while (i < query.len) {
    size_t end = i;
    while (end < query.len && query.ptr[end] != '&') end++;
    if (end - i > key_len && memcmp(query.ptr + i, key, key_len) == 0 && query.ptr[i + key_len] == '=') {
      PluginStr value = {query.ptr + i + key_len + 1, end - i - key_len - 1};
      return value;
    }
    i = end + 1;
  }
  return none;
}

static PluginStatus greet(void *instance, void *user_data, const PluginRequest *request,
                          const PluginResponse *response, const PluginErrorSink *error) {
  char text[512];
  PluginStr name = {NULL, 0}, greeting;
  size_t i;
  int len;
  (void)instance;
  (void)user_data;
  for (i = 0; i < request->param_count; i++) {
    if (str_eq(request->params[i].name, "name")) name = request->params[i].value;
  }
  if (name.len == 0) return fail(error, "missing {name}");
  greeting = query_value(request->query, "greeting");
  if (greeting.len == 0) greeting = plugin_str_from_cstr("Hello");
  len = snprintf(text, sizeof text, "%.*s, %.*s!", (int)greeting.len, (const char *)greeting.ptr,
                 (int)name.len, (const char *)name.ptr);
  if (len < 0 || (size_t)len >= sizeof text) return fail(error, "greeting too long");
  return write_text(response, text, (size_t)len);
}

static PluginStatus hello(void *instance, void *user_data, const PluginRequest *request,
                          const PluginResponse *response, const PluginErrorSink *error) {
  (void)instance;
  (void)user_data;
  (void)request;
  (void)error;
  return write_text(response, "hello from C", 12);
}

static PluginStatus echo(void *instance, void *user_data, const PluginRequest *request,
                         const PluginResponse *response, const PluginErrorSink *error) {
  size_t i;
  PluginStatus status;
  (void)instance;
  (void)user_data;
  (void)error;
  for (i = 0; i < request->header_count; i++) {
    if (str_eq(request->headers[i].name, "content-type")) {
      status = response->add_header(response->ctx, request->headers[i].name, request->headers[i].value);
      if (status != PLUGIN_OK) return status;
    }
  }
  return response->write_body(response->ctx, request->body);
}

static PluginStatus greeter_create(const PluginHost *host, PluginStr config, void **out_instance,
                                   const PluginErrorSink *error) {
  Greeter *g;
  (void)config; /* no configuration */
  g = malloc(sizeof *g);
  if (g == NULL) return fail(error, "out of memory");
  g->host = host;
  *out_instance = g;
  return PLUGIN_OK;
}

static PluginStatus greeter_start(void *instance, const PluginErrorSink *error) {
  (void)error;
  log_info(instance, "starting");
  return PLUGIN_OK;
}

static PluginStatus greeter_stop(void *instance, const PluginErrorSink *error) {
  (void)error;
  log_info(instance, "stopping");
  return PLUGIN_OK;
}

static void greeter_destroy(void *instance) { free(instance); }

static PluginStatus add(const PluginRouteSink *sink, const char *method, const char *path,
                        PluginStatus (*handler)(void *, void *, const PluginRequest *,
                                                const PluginResponse *, const PluginErrorSink *)) {
  PluginRoute route;
  memset(&route, 0, sizeof route);
  route.struct_size = sizeof route;
  route.method = plugin_str_from_cstr(method);
  route.path = plugin_str_from_cstr(path);
  route.handler = handler;
  route.user_data = NULL;
  return sink->add(sink->ctx, &route);
}

static PluginStatus greeter_routes(void *instance, const PluginRouteSink *sink,
                                   const PluginErrorSink *error) {
  (void)instance;
  if (add(sink, "GET", "/greet/{name}", greet) != PLUGIN_OK ||
      add(sink, "GET", "/c/hello", hello) != PLUGIN_OK ||
      add(sink, "POST", "/c/echo", echo) != PLUGIN_OK) {
    return fail(error, "the host refused a route");
  }
  return PLUGIN_OK;
}

PLUGIN_ABI_MARK;

static const PluginDescriptor DESCRIPTOR = {
    .header = {PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, sizeof(PluginDescriptor), 0},
    .name = {(const uint8_t *)"greeter", 7},
    .version = {(const uint8_t *)"1.0.0", 5},
    .rust_layout = NULL,
    .create = greeter_create,
    .start = greeter_start,
    .stop = greeter_stop,
    .destroy = greeter_destroy,
    .routes = greeter_routes,
};

PLUGIN_EXPORT const PluginDescriptor *plugin_factory(const PluginFactoryArgs *args) {
  (void)args;
  return &DESCRIPTOR;
}
