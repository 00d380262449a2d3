// {{name}}: a plugin for plugin-host, in C++17, written against plugin_api.h.
//
//   GET /{{name}}   "hello from {{name}}"
#include "plugin_api.h"

#include <exception>
#include <string>

namespace {

// One instance: created by `create`, freed by `destroy`.
struct Plug {
  const PluginHost *host;  // valid until the library is unloaded
  std::string greeting = "hello";
};

PluginStatus fail(const PluginErrorSink *error, const char *message) {
  error->set(error->ctx, plugin_str_from_cstr(message));
  return PLUGIN_ERROR;
}

// No exception may leave a function the host calls: each one catches everything.
PluginStatus create(const PluginHost *host, PluginStr config, void **out_instance,
                    const PluginErrorSink *error) noexcept {
  (void)config;  // the [plugin.config] table as JSON, "{}" without one
  try {
    *out_instance = new Plug{host};
    host->log(host->ctx, PLUGIN_LOG_INFO, plugin_str_from_cstr("created"));
    return PLUGIN_OK;
  } catch (...) {
    return fail(error, "create failed");
  }
}

void destroy(void *instance) noexcept { delete static_cast<Plug *>(instance); }

// [thread-safe]: runs on many threads at once.
PluginStatus hello(void *instance, void *, const PluginRequest *, const PluginResponse *response,
                   const PluginErrorSink *error) noexcept {
  try {
    const auto *plug = static_cast<const Plug *>(instance);
    const std::string type = "text/plain; charset=utf-8";
    const PluginBytes type_bytes = {reinterpret_cast<const uint8_t *>(type.data()), type.size()};
    if (response->add_header(response->ctx, plugin_str_from_cstr("content-type"), type_bytes) !=
        PLUGIN_OK) {
      return fail(error, "the host refused a header");  // the client gets 500
    }
    const std::string text = plug->greeting + " from {{name}}\n";
    const PluginBytes body = {reinterpret_cast<const uint8_t *>(text.data()), text.size()};
    return response->write_body(response->ctx, body);  // the host copies the bytes
  } catch (const std::exception &e) {
    return fail(error, e.what());
  } catch (...) {
    return PLUGIN_PANICKED;
  }
}

PluginStatus routes(void *, const PluginRouteSink *sink, const PluginErrorSink *error) noexcept {
  PluginRoute route{};
  route.struct_size = sizeof route;
  route.method = plugin_str_from_cstr("GET");
  route.path = plugin_str_from_cstr("/{{name}}");
  route.handler = hello;
  if (sink->add(sink->ctx, &route) != PLUGIN_OK) return fail(error, "the host refused the route");
  return PLUGIN_OK;
}

const PluginDescriptor DESCRIPTOR = {
    {PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, sizeof(PluginDescriptor), 0},
    plugin_str_from_cstr("{{name}}"),
    plugin_str_from_cstr("0.1.0"),
    nullptr,  // rust_layout: Rust SDK only
    create,
    nullptr,  // start
    nullptr,  // stop
    destroy,
    routes,
    nullptr,  // on_request: the hooks (ABI 1.1), none here
    nullptr,  // on_response
    nullptr,  // on_connect
    nullptr,  // on_disconnect
};

}  // namespace

PLUGIN_ABI_MARK;  // lets the host check the ABI version before it loads the file

extern "C" PLUGIN_EXPORT const PluginDescriptor *plugin_factory(const PluginFactoryArgs *) {
  return &DESCRIPTOR;
}
