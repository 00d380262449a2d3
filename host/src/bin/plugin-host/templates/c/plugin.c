/*
 * {{name}}: a plugin for plugin-host, in C11, written against plugin_api.h.
 *
 *   GET /{{name}}   "hello from {{name}}"
 */
#include "plugin_api.h"

static PluginStatus create(const PluginHost *host, PluginStr config, void **out_instance,
                           const PluginErrorSink *error) {
  /* config: the [plugin.config] table of the entry as JSON, "{}" without one; borrowed for
   * this call. host: valid until the library is unloaded, so it may be kept. */
  (void)config;
  (void)error;
  host->log(host->ctx, PLUGIN_LOG_INFO, plugin_str_from_cstr("created"));
  *out_instance = NULL; /* no state; any pointer comes back to every other call */
  return PLUGIN_OK;
}

static void destroy(void *instance) { (void)instance; }

/* [thread-safe]: runs on many threads at once. */
static PluginStatus hello(void *instance, void *user_data, const PluginRequest *request,
                          const PluginResponse *response, const PluginErrorSink *error) {
  PluginBytes type = {(const uint8_t *)"text/plain; charset=utf-8", 25};
  PluginBytes body = {(const uint8_t *)"hello from {{name}}\n", sizeof "hello from {{name}}\n" - 1};
  (void)instance;
  (void)user_data;
  (void)request;
  if (response->add_header(response->ctx, plugin_str_from_cstr("content-type"), type) != PLUGIN_OK) {
    error->set(error->ctx, plugin_str_from_cstr("the host refused a header"));
    return PLUGIN_ERROR; /* the client gets 500 */
  }
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
