cwlVersion: v1.2
class: CommandLineTool
label: sort lines and drop duplicates
requirements:
  DockerRequirement: {dockerPull: "@IMAGE@"}
  ResourceRequirement: {coresMax: 1, ramMax: 128}
baseCommand: [sort, -u]
inputs:
  src:
    type: File
    inputBinding: {position: 1}
outputs:
  out: {type: stdout}
stdout: sorted.txt
