"use strict";
// The station token arrives once, in the address's fragment (#token=…, which no server log
// sees): it is traded for the HttpOnly session cookie and dropped from the address. Nothing
// keeps it in the page or the browser's storage. Everything else is htmx.
(function () {
  const m = location.hash.match(/token=([^&]+)/);
  if (!m) return;
  history.replaceState(null, "", location.pathname);
  fetch("/api/v1/session", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({token: decodeURIComponent(m[1])})})
    .then(() => location.replace(location.pathname));
})();
