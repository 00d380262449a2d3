/*
 * The C half of {{name}} (see plugin.go): the descriptor, plugin_factory, the ABI mark, and
 * the functions the host calls, which pass their calls on to Go.
 */
#include "plugin_api.h"

#include "_cgo_export.h"

static PluginStatus create(const PluginHost *host, PluginStr config, void **out_instance,
                           const PluginErrorSink *error) {
  (void)config; /* the [plugin.config] table as JSON, "{}" without one */
  (void)error;
  host->log(host->ctx, PLUGIN_LOG_INFO, plugin_str_from_cstr("created"));
  *out_instance = NULL;
  return PLUGIN_OK;
}

static void destroy(void *instance) { (void)instance; }

/* [thread-safe]: runs on many threads at once (Go handles that). */
static PluginStatus hello(void *instance, void *user_data, const PluginRequest *request,
                          const PluginResponse *response, const PluginErrorSink *error) {
  char text[256];
  long len = goHello(text, sizeof text);
  PluginBytes type = {(const uint8_t *)"text/plain; charset=utf-8", 25};
  PluginBytes body;
  (void)instance;
  (void)user_data;
  (void)request;
  if (len < 0) {
    error->set(error->ctx, plugin_str_from_cstr("the Go handler failed"));
    return PLUGIN_ERROR; /* the client gets 500 */
  }
  if (response->add_header(response->ctx, plugin_str_from_cstr("content-type"), type) != PLUGIN_OK) {
    error->set(error->ctx, plugin_str_from_cstr("the host refused a header"));
    return PLUGIN_ERROR;
  }
  body.ptr = (const uint8_t *)text;
  body.len = (size_t)len;
  return response->write_body(response->ctx, body); /* the host copies the bytes */
}

static PluginStatus routes(void *instance, const PluginRouteSink *sink,
                           const PluginErrorSink *error) {
  PluginRoute route = {sizeof(PluginRoute), {(const uint8_t *)"GET", 3},
                       {(const uint8_t *)"/{{name}}", sizeof "/{{name}}" - 1}, hello, NULL};
  (void)instance;
  if (sink->add(sink->ctx, &route) != PLUGIN_OK) {
    error->set(error->ctx, plugin_str_from_cstr("the host refused the route"));
    return PLUGIN_ERROR;
  }
  return PLUGIN_OK;
}

static const PluginDescriptor DESCRIPTOR = {
    {PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, sizeof(PluginDescriptor), 0},
    {(const uint8_t *)"{{name}}", sizeof "{{name}}" - 1},
    {(const uint8_t *)"0.1.0", 5},
    NULL, /* rust_layout: Rust SDK only */
    create, NULL /* start */, NULL /* stop */, destroy, routes,
    /* on_request, on_response, on_connect, on_disconnect: the hooks (ABI 1.1), none here */
    NULL, NULL, NULL, NULL,
};

PLUGIN_ABI_MARK; /* lets the host check the ABI version before it loads the file */

PLUGIN_EXPORT const PluginDescriptor *plugin_factory(const PluginFactoryArgs *args) {
  (void)args;
  return &DESCRIPTOR;
}
