import libdemo
from cjm_text_plugin_system.plugin_interface import TextPlugin


class EchoPlugin(TextPlugin):
    name = "cjm-text-plugin-echo"
    version = "0.2.0"

    def get_config_schema(self):
        return {"type": "object", "properties": {}}

    def execute(self, text="hello", **kwargs):
        return {"text": libdemo.render(text), "libdemo": libdemo.VERSION}
