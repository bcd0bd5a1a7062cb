// Upload with progress for the data pages (loaded from 'self': the CSP allows no inline script).
// Without JavaScript the form posts normally; with it, the browser first computes the file's
// SHA-256 (sent as the expected checksum, so bytes changed on the way are refused and nothing is
// stored), then sends the file as the request body with XMLHttpRequest to show upload progress.
(function () {
  "use strict";
  var HASH_LIMIT = 256 * 1024 * 1024; // larger files are hashed by the dashboard only
  var form = document.querySelector("form[data-upload]");
  if (!form || !window.XMLHttpRequest || !window.URLSearchParams) {
    return;
  }
  var bar = document.getElementById("upload-progress");
  var statusLine = document.getElementById("upload-status");
  var result = document.getElementById("upload-result");
  var button = form.querySelector("button[type=submit]");

  function say(text) {
    statusLine.textContent = text;
  }

  function progress(percent) {
    bar.value = percent;
    bar.textContent = percent + "%";
  }

  function hex(buffer) {
    return Array.prototype.map.call(new Uint8Array(buffer), function (b) {
      return ("0" + b.toString(16)).slice(-2);
    }).join("");
  }

  function digest(file) {
    if (!window.crypto || !window.crypto.subtle || file.size > HASH_LIMIT) {
      return Promise.resolve("");
    }
    say("Computing the SHA-256 in your browser…");
    return file.arrayBuffer().then(function (data) {
      return window.crypto.subtle.digest("SHA-256", data);
    }).then(hex, function () {
      return "";
    });
  }

  function showError(html, status) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var box = doc.getElementById("upload-result") || doc.getElementById("error-message");
    var nodes = box ? Array.prototype.slice.call(box.childNodes) : [];
    if (!nodes.length) {
      nodes = [document.createTextNode("The upload failed (HTTP " + status + ").")];
    }
    result.replaceChildren.apply(result, nodes.map(function (n) { return document.importNode(n, true); }));
    var alertBox = result.querySelector("[role=alert]");
    if (alertBox) {
      alertBox.setAttribute("tabindex", "-1");
      alertBox.focus();
    }
  }

  form.addEventListener("submit", function (event) {
    var file = form.elements.file.files[0];
    if (!file) {
      return;
    }
    event.preventDefault();
    button.disabled = true;
    progress(0);
    var shaField = form.elements.sha256;
    var ready = shaField.value ? Promise.resolve(shaField.value) : digest(file);
    ready.then(function (sha) {
      shaField.value = sha;
      var query = new URLSearchParams();
      query.set("filename", file.name);
      ["name", "dataset_id", "sha256"].forEach(function (field) {
        if (form.elements[field].value) {
          query.set(field, form.elements[field].value);
        }
      });
      var xhr = new XMLHttpRequest();
      // the file itself is the body: streamed to the data store, never spooled by the dashboard
      xhr.open("POST", form.getAttribute("data-stream-url") + "?" + query.toString());
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("X-CSRF-Token", form.elements.csrf_token.value);
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          var percent = Math.floor((e.loaded * 100) / e.total);
          progress(percent);
          say("Uploading: " + percent + "%");
        }
      });
      xhr.addEventListener("load", function () {
        var next = xhr.getResponseHeader("X-Location");
        if (xhr.status < 400 && next) {
          progress(100);
          say("Stored and checksummed.");
          window.location.assign(next);
          return;
        }
        say("");
        progress(0);
        button.disabled = false;
        showError(xhr.responseText, xhr.status);
      });
      xhr.addEventListener("error", function () {
        say("The connection failed before the dashboard answered.");
        button.disabled = false;
      });
      xhr.send(file);
    });
  });
})();
