cwlVersion: v1.2
class: CommandLineTool
label: upper-case every line
requirements:
  DockerRequirement: {dockerPull: "@IMAGE@"}
  ResourceRequirement: {coresMax: 1, ramMax: 128}
baseCommand: [sh, -c, 'tr a-z A-Z < "$0"']
inputs:
  src:
    type: File
    inputBinding: {position: 1}
outputs:
  out: {type: stdout}
stdout: upper.txt
