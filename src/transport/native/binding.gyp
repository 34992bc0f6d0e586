{
  "targets": [
    {
      "target_name": "wasmdev_transport",
      "sources": ["transport.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "defines": ["NAPI_VERSION=8"]
    },
    {
      "target_name": "install_addon",
      "type": "none",
      "dependencies": ["wasmdev_transport"],
      "copies": [
        {
          "destination": "<(module_root_dir)/../../../build/native",
          "files": ["<(PRODUCT_DIR)/wasmdev_transport.node"]
        }
      ]
    }
  ]
}
