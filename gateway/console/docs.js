// Swagger UI over the gateway's own OpenAPI document. "Authorize" takes a bearer token;
// the console's signed-in token (sessionStorage, same origin) is offered as the default.
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  const ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: false,
    persistAuthorization: false,
    validatorUrl: null, // never call the public validator: no network beyond this origin
  });
  const token = window.sessionStorage.getItem("aos.token");
  if (token) {
    ui.preauthorizeApiKey("bearerAuth", token);
  }
});
