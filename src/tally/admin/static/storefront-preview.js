// The Storefront page's live preview: the draft texts and colours go to the real widget as its
// data-appearance, which it applies without asking the server again. The saved look is only
// what "Save" posts.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form[data-preview]");
    var preview = form && document.querySelector(form.dataset.preview);
    if (!preview) {
      return;
    }
    var names = ["primary_colour", "text_colour", "launcher_label", "title", "guest_message", "position"];
    function update() {
      var look = {};
      names.forEach(function (name) {
        var input = form.elements.namedItem(name);
        if (input && input.value.trim()) {
          look[name] = input.value.trim();
        }
      });
      preview.dataset.appearance = JSON.stringify(look);
    }
    form.addEventListener("input", update);
    form.addEventListener("change", update);
  });
})();
