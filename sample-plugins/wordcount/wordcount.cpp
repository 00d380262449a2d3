// wordcount: a sample plugin in C++17, written against include/plugin_api.h only.
//
//   POST /words            {"words": N, "bytes": M} for the request body
//   GET  /cpp/files/{*path} the matched rest of the path (a catch-all route)
//
// No C++ exception may leave a plugin function, so every entry point runs inside `guarded`.
#include "plugin_api.h"

#include <cctype>
#include <exception>
#include <string>

namespace {

struct WordCount {
  const PluginHost *host;  // valid until the library is unloaded
  void log(const char *message) const {
    host->log(host->ctx, PLUGIN_LOG_INFO, plugin_str_from_cstr(message));
  }
};

PluginStr view(const std::string &s) {
  PluginStr str;
  str.ptr = reinterpret_cast<const uint8_t *>(s.data());
  str.len = s.size();
  return str;
}

template <typename F>
PluginStatus guarded(const PluginErrorSink *error, F &&body) noexcept {
  try {
    return body();
  } catch (const std::exception &e) {
    error->set(error->ctx, view(std::string("exception: ") + e.what()));
  } catch (...) {
    error->set(error->ctx, plugin_str_from_cstr("unknown exception"));
  }
  return PLUGIN_PANICKED;
}

PluginStatus send(const PluginResponse *response, const char *type, const std::string &body) {
  PluginBytes content_type;
  content_type.ptr = reinterpret_cast<const uint8_t *>(type);
  content_type.len = std::char_traits<char>::length(type);
  PluginStatus status =
      response->add_header(response->ctx, plugin_str_from_cstr("content-type"), content_type);
  if (status != PLUGIN_OK) return status;
  PluginBytes bytes;
  bytes.ptr = reinterpret_cast<const uint8_t *>(body.data());
  bytes.len = body.size();
  return response->write_body(response->ctx, bytes);
}

PluginStatus count_words(void *, void *, const PluginRequest *request,
                         const PluginResponse *response, const PluginErrorSink *error) {
  return guarded(error, [&] {
    size_t words = 0;
    bool in_word = false;
    for (size_t i = 0; i < request->body.len; i++) {
      bool space = std::isspace(request->body.ptr[i]) != 0;
      if (!space && !in_word) words++;
      in_word = !space;
    }
    std::string json = "{\"words\":" + std::to_string(words) +
                       ",\"bytes\":" + std::to_string(request->body.len) + "}";
    return send(response, "application/json", json);
  });
}

PluginStatus file_path(void *, void *, const PluginRequest *request,
                       const PluginResponse *response, const PluginErrorSink *error) {
  return guarded(error, [&] {
    std::string path;
    for (size_t i = 0; i < request->param_count; i++) {
      const PluginParam &p = request->params[i];
      if (std::string(reinterpret_cast<const char *>(p.name.ptr), p.name.len) == "path") {
        path.assign(reinterpret_cast<const char *>(p.value.ptr), p.value.len);
      }
    }
    return send(response, "text/plain; charset=utf-8", "file: " + path);
  });
}

PluginStatus create(const PluginHost *host, PluginStr, void **out_instance,
                    const PluginErrorSink *error) {
  return guarded(error, [&] {
    *out_instance = new WordCount{host};
    return PLUGIN_OK;
  });
}

PluginStatus start(void *instance, const PluginErrorSink *error) {
  return guarded(error, [&] {
    static_cast<WordCount *>(instance)->log("starting");
    return PLUGIN_OK;
  });
}

PluginStatus stop(void *instance, const PluginErrorSink *error) {
  return guarded(error, [&] {
    static_cast<WordCount *>(instance)->log("stopping");
    return PLUGIN_OK;
  });
}

void destroy(void *instance) { delete static_cast<WordCount *>(instance); }

PluginStatus routes(void *, const PluginRouteSink *sink, const PluginErrorSink *error) {
  return guarded(error, [&] {
    struct {
      const char *method, *path;
      PluginStatus (*handler)(void *, void *, const PluginRequest *, const PluginResponse *,
                              const PluginErrorSink *);
    } const table[] = {{"POST", "/words", count_words}, {"GET", "/cpp/files/{*path}", file_path}};
    for (const auto &entry : table) {
      PluginRoute route{};
      route.struct_size = sizeof route;
      route.method = plugin_str_from_cstr(entry.method);
      route.path = plugin_str_from_cstr(entry.path);
      route.handler = entry.handler;
      route.user_data = nullptr;
      if (sink->add(sink->ctx, &route) != PLUGIN_OK) {
        error->set(error->ctx, plugin_str_from_cstr("the host refused a route"));
        return PLUGIN_ERROR;
      }
    }
    return PLUGIN_OK;
  });
}

}  // namespace

PLUGIN_ABI_MARK;

const PluginDescriptor *plugin_factory(const PluginFactoryArgs *) {
  static const PluginDescriptor descriptor = {
      {PLUGIN_ABI_MAGIC, PLUGIN_ABI_MAJOR, PLUGIN_ABI_MINOR, sizeof(PluginDescriptor), 0},
      plugin_str_from_cstr("wordcount"),
      plugin_str_from_cstr("1.0.0"),
      nullptr,
      create,
      start,
      stop,
      destroy,
      routes,
      nullptr,  // on_request: the hooks (ABI 1.1), none here
      nullptr,  // on_response
      nullptr,  // on_connect
      nullptr,  // on_disconnect
  };
  return &descriptor;
}
