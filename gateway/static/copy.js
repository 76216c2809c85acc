// The copy button on the "API key created" page: a convenience; without scripts the key is selectable text.
"use strict";
(function () {
  var button = document.getElementById("copy-key");
  var status = document.getElementById("copy-status");
  if (!button || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    var field = document.getElementById(button.getAttribute("data-copy"));
    navigator.clipboard.writeText(field.value).then(
      function () { status.textContent = "Copied."; },
      function () { field.select(); status.textContent = "Select the key and copy it yourself."; }
    );
  });
})();
