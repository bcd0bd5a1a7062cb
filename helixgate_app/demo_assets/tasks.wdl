version 1.0

task upper {
  meta { description: "upper-case every line" }
  input {
    File src
  }
  command <<<
    tr a-z A-Z < '~{src}'
  >>>
  output {
    File out = stdout()
  }
  runtime {
    docker: "@IMAGE@"
  }
}

task unique {
  meta { description: "sort lines and drop duplicates" }
  input {
    File src
  }
  command <<<
    sort -u '~{src}'
  >>>
  output {
    File out = stdout()
  }
  runtime {
    docker: "@IMAGE@"
  }
}

task count {
  meta { description: "count lines" }
  input {
    File src
  }
  command <<<
    wc -l < '~{src}' | tr -d ' '
  >>>
  output {
    File out = stdout()
  }
  runtime {
    docker: "@IMAGE@"
  }
}
