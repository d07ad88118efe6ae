// Tally admin: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  // The narrow-screen menu: the CSS folds the sidebar away only once this script runs.
  document.documentElement.classList.add("js");
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.querySelector(".menu-button");
    var nav = button && document.getElementById(button.getAttribute("aria-controls"));
    if (!nav) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      var open = button.getAttribute("aria-expanded") !== "true";
      button.setAttribute("aria-expanded", open ? "true" : "false");
      nav.classList.toggle("open", open);
    });
  });

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // htmx requests carry the session's CSRF token in a header (forms also carry it as a field).
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // Ask before destructive actions: <form data-confirm="Revoke this key?">.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
        event.stopImmediatePropagation();
      }
    }
  }, true);

  // Copy buttons: <button data-copy="#element-id">.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-copy]") : null;
    if (!button) {
      return;
    }
    var source = document.querySelector(button.dataset.copy);
    if (!source || !navigator.clipboard) {
      return;
    }
    var value = source.value !== undefined ? source.value : source.textContent;
    navigator.clipboard.writeText(value.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      window.setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  // Tabs: keep aria-selected in step when htmx loads a tab panel.
  document.addEventListener("htmx:afterRequest", function (event) {
    var tab = event.detail.elt;
    if (!tab || tab.getAttribute("role") !== "tab" || !event.detail.successful) {
      return;
    }
    var list = tab.closest('[role="tablist"]');
    if (!list) {
      return;
    }
    list.querySelectorAll('[role="tab"]').forEach(function (other) {
      other.setAttribute("aria-selected", other === tab ? "true" : "false");
    });
  });

  // Auto-submit filters (selects) of a search form: <form data-autosubmit>.
  document.addEventListener("change", function (event) {
    var field = event.target;
    var form = field && field.form;
    if (form && form.hasAttribute("data-autosubmit") && field.tagName === "SELECT") {
      if (window.htmx) {
        window.htmx.trigger(form, "submit");
      } else {
        form.submit();
      }
    }
  });
})();
